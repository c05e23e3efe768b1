// A cited passage in its place: the dialog with the passage and its neighbours, as the collection holds them now.
import { api, report } from "./api.js";
import { $, el, pagesLabel } from "./dom.js";
import { markdownNodes } from "./markdown.js";
import { ALL, state } from "./state.js";

const passageNode = (attrs, text) => el("div", attrs, markdownNodes(text));

export async function openPassage(source) {
  const dialog = $("passage");
  $("passage-source").textContent = source.name;
  const where = [pagesLabel(source), source.headings.join(" › ")].filter(Boolean).join(" · ");
  $("passage-location").textContent = [source.collection && state.collections.length > 1 ? source.collection : "", where].filter(Boolean).join(" · ");
  const body = $("passage-body");
  body.replaceChildren(passageNode({ class: "cited", testid: "passage-text" }, source.text));
  if (!dialog.open) dialog.showModal();
  const collection = source.collection || (state.chatCollection !== ALL && state.chatCollection) || state.collection;
  if (!collection || collection === ALL) return;
  try {
    const p = await api(`/collections/${encodeURIComponent(collection)}/passages/${source.chunk_id}?window=1`);
    body.replaceChildren(
      ...p.before.map((t) => passageNode({ class: "context", testid: "passage-before" }, t)),
      passageNode({ class: "cited", testid: "passage-text" }, p.text),
      ...p.after.map((t) => passageNode({ class: "context", testid: "passage-after" }, t)));
    body.querySelector(".cited").scrollIntoView({ block: "center" });
    if (p.highlight) await showPage(body, p.highlight);
  } catch (exc) {
    if (exc.status === 404) body.append(el("p", { class: "muted" }, "This passage has changed since (the document was re-indexed or deleted): the text above is what the answer used."));
    else report(exc);
  }
}
// A PDF citation: its page as the server renders it, the passage marked where it stands (boxes in % of the page).
async function showPage(body, h) {
  const response = await api(h.image, { raw: true });
  const img = el("img", { src: URL.createObjectURL(await response.blob()), alt: `Page ${h.page}`, testid: "passage-page-image" });
  const marks = h.rects.map(([l, t, r, b]) => {
    const mark = el("div", { class: "hl", testid: "passage-highlight" });
    Object.assign(mark.style, { left: `${(100 * l) / h.width}%`, top: `${(100 * t) / h.height}%`,
      width: `${(100 * (r - l)) / h.width}%`, height: `${(100 * (b - t)) / h.height}%` }); // CSSOM: the page's CSP allows it
    return mark;
  });
  const figure = el("figure", { class: "page-view", testid: "passage-page" },
    el("div", { class: "page-sheet" }, img, ...marks), el("figcaption", { class: "muted" }, `Page ${h.page}, as printed`));
  body.prepend(figure);
  await img.decode().catch(() => {});
  (marks[0] || figure).scrollIntoView({ block: "center" });
}

export function initPassages() {
  $("passage").addEventListener("click", (e) => {
    if (e.target === $("passage") || e.target.closest("[data-close]")) $("passage").close();
  });
}
