// The collections: the list at the left, the picker above the chat, and creating one.
import { api, report } from "./api.js";
import { $, banner, el } from "./dom.js";
import { ALL, PICKED, emit, on, state } from "./state.js";

export async function loadCollections() {
  const { collections } = await api("/collections");
  state.collections = collections;
  const list = $("collections");
  list.replaceChildren(...collections.map((c) => el("li", {
    tabindex: 0, testid: "collection", "data-name": c.name, "aria-current": String(c.name === state.collection),
    onclick: () => pick(c.name), onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(c.name); } },
  }, el("span", { class: "label" }, c.name),
    el("span", { class: "counts", testid: "collection-counts" }, `${c.documents} docs · ${c.chunks} chunks`))));
  if (!collections.length) list.append(el("li", { class: "muted" }, "No collection yet: create one below."));
  const select = $("collection");
  const options = collections.map((c) => el("option", { value: c.name }, c.name));
  if (collections.length > 1) options.push(el("option", { value: ALL }, "All collections"));
  select.replaceChildren(...options);
  const names = collections.map((c) => c.name).concat(collections.length > 1 ? [ALL] : []);
  const wanted = [state.collection, localStorage.getItem(PICKED)].find((n) => n && names.includes(n)) || names[0] || null;
  state.collection = wanted;
  if (wanted) select.value = wanted;
  select.disabled = !collections.length;
}

export function pick(name) {
  if (name === state.collection) return;
  state.collection = name;
  localStorage.setItem(PICKED, name);
  $("collection").value = name;
  for (const li of $("collections").children) li.setAttribute("aria-current", String(li.dataset.name === name));
  emit("collection", name);
}

async function create(e) {
  e.preventDefault();
  const input = $("new-collection-name");
  const button = $("new-collection").querySelector("button");
  button.disabled = true;
  button.textContent = "Creating…"; // the first collection loads the embedding model: seconds
  try {
    const created = await api("/collections", { method: "POST", body: { name: input.value.trim() } });
    input.value = "";
    banner(null);
    state.collection = null;
    localStorage.setItem(PICKED, created.name);
    await loadCollections();
    pick(created.name);
  } catch (exc) { report(exc); } finally {
    button.disabled = false;
    button.textContent = "Create";
  }
}

export function initCollections() {
  $("collection").addEventListener("change", (e) => pick(e.target.value));
  $("new-collection").addEventListener("submit", create);
  on("documents-changed", () => loadCollections().catch(report)); // the counts at the left
}
