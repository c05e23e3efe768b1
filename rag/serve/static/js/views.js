// The three views (chat, documents, search) behind their tabs.
import { $ } from "./dom.js";
import { emit } from "./state.js";

export function showView(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.view === name;
    tab.setAttribute("aria-selected", String(on));
    $(`view-${tab.dataset.view}`).hidden = !on;
  }
  emit("view", name);
}

export const visible = (name) => !$(`view-${name}`).hidden;

export function initViews() {
  for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => showView(tab.dataset.view));
}
