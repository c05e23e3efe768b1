// Small DOM helpers, the page's words in English and Chinese, and the banner.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "testid") node.dataset.testid = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

export const isChinese = (text) => /[\u3400-\u9fff]/.test(text || "");
const words = {
  en: { sources: "Sources", notFound: "Not found in the documents", stopped: "Stopped.", thinking: "Searching the documents…",
    reading: (n) => `Reading ${n} passage${n === 1 ? "" : "s"} and writing the answer…`,
    unsupported: "No passage was found to say this; check before relying on it:" },
  zh: { sources: "来源", notFound: "文档中没有找到答案", stopped: "已停止。", thinking: "正在检索文档…",
    reading: (n) => `正在阅读 ${n} 段文字并撰写回答…`, unsupported: "以下内容在文档中找不到依据，请核实：" },
};
export const say = (question, key) => words[isChinese(question) ? "zh" : "en"][key];

export function pagesLabel(s) {
  if (s.pages) return `p.${s.pages}`;
  if (s.page) return s.page_end && s.page_end !== s.page ? `p.${s.page}-${s.page_end}` : `p.${s.page}`;
  return "";
}

export function bytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function when(ts) { // seconds since the epoch, or an ISO date
  if (!ts) return "";
  const d = new Date(typeof ts === "number" ? ts * 1000 : ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toLocaleDateString() === new Date().toLocaleDateString() ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString();
}

export function banner(message, kind = "error") {
  const b = $("banner");
  if (!message) { b.hidden = true; b.textContent = ""; return; }
  b.textContent = message;
  b.className = "banner" + (kind === "info" ? " info" : "");
  b.hidden = false;
}
