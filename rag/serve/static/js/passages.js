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
  } catch (exc) {
    if (exc.status === 404) body.append(el("p", { class: "muted" }, "This passage has changed since (the document was re-indexed or deleted): the text above is what the answer used."));
    else report(exc);
  }
}
export function initPassages() {
  $("passage").addEventListener("click", (e) => {
    if (e.target === $("passage") || e.target.closest("[data-close]")) $("passage").close();
  });
}
