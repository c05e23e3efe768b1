import { el } from "./dom.js";

// A passage's Markdown as DOM nodes (headings, emphasis, inline code, lists, fenced code, tables); text only ever
// becomes text nodes, never HTML, so a document cannot inject markup into the page.
function inlineMarkdown(text) {
  const out = [];
  const pattern = /(`[^`]+`|\*\*[^*]+\*\*|__[^_]+__|\*[^*\s][^*]*\*|_[^_\s][^_]*_)/g;
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    out.push(text.slice(last, m.index));
    const t = m[0];
    if (t.startsWith("`")) out.push(el("code", {}, t.slice(1, -1)));
    else if (t.startsWith("**") || t.startsWith("__")) out.push(el("strong", {}, t.slice(2, -2)));
    else out.push(el("em", {}, t.slice(1, -1)));
    last = m.index + t.length;
  }
  out.push(text.slice(last));
  return out;
}

const cells = (line) => line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());

export function markdownNodes(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let para = [];
  const flush = () => { if (para.length) out.push(el("p", {}, inlineMarkdown(para.join(" ")))); para = []; };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let m;
    if (/^\s*```/.test(line)) {
      flush();
      const code = [];
      while (++i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i]);
      out.push(el("pre", {}, el("code", {}, code.join("\n"))));
    } else if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
      flush();
      out.push(el(`h${Math.min(6, m[1].length + 2)}`, { class: "md-heading" }, inlineMarkdown(m[2])));
    } else if (/^\s*\|.*\|\s*$/.test(line) && /^\s*\|?\s*:?-{2,}/.test(lines[i + 1] || "")) {
      flush();
      const head = cells(line);
      const rows = [];
      i++;
      while (i + 1 < lines.length && /^\s*\|.*\|\s*$/.test(lines[i + 1])) rows.push(cells(lines[++i]));
      out.push(el("table", {}, el("thead", {}, el("tr", {}, head.map((c) => el("th", {}, inlineMarkdown(c))))),
        el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, inlineMarkdown(c))))))));
    } else if ((m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line))) {
      flush();
      const ordered = /\d/.test(m[1]);
      const items = [el("li", {}, inlineMarkdown(m[2]))];
      let n;
      while (i + 1 < lines.length && (n = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i + 1])) && /\d/.test(n[1]) === ordered) {
        items.push(el("li", {}, inlineMarkdown(n[2])));
        i++;
      }
      out.push(el(ordered ? "ol" : "ul", {}, items));
    } else if (!line.trim()) flush();
    else para.push(line.trim());
  }
  flush();
  return out;
}
