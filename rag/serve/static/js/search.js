// The search view: the passages each collection returns for a query, with the stage timings.
import { api, report } from "./api.js";
import { $, banner, el, pagesLabel } from "./dom.js";
import { openPassage } from "./passages.js";
import { ALL, state } from "./state.js";

async function search(e) {
  e.preventDefault();
  if (!state.collection) { banner("Create a collection first."); return; }
  const query = $("search-query").value.trim();
  const k = Number($("search-k").value) || 5;
  const mode = $("search-mode").value || undefined;
  const out = $("search-out");
  out.replaceChildren(el("p", { class: "muted" }, "Searching…"));
  const names = state.collection === ALL ? state.collections.map((c) => c.name) : [state.collection];
  try {
    const replies = await Promise.all(names.map((n) =>
      api(`/collections/${encodeURIComponent(n)}/search`, { method: "POST", body: { query, k, mode } }).then((r) => [n, r])));
    banner(null);
    out.replaceChildren(...replies.map(([n, r]) => el("section", { testid: "search-collection", "data-name": n },
      names.length > 1 ? el("h2", {}, n) : null,
      el("p", { class: "timings", testid: "search-timings" }, Object.entries(r.timings_ms).map(([stage, ms]) => `${stage} ${ms.toFixed(1)} ms`).join(" · ")),
      r.hits.length ? el("ol", { class: "results" }, r.hits.map((h) => {
        const source = { ...h, n: h.rank, name: h.source.split(/[\\/]/).pop(), collection: n };
        return el("li", { testid: "search-hit", tabindex: 0, onclick: () => openPassage(source), onkeydown: (ev) => { if (ev.key === "Enter") openPassage(source); } },
          el("div", { class: "meta" }, `score ${h.score.toFixed(4)} · ${source.name}${pagesLabel(h) ? " · " + pagesLabel(h) : ""}${h.headings.length ? " · " + h.headings.join(" › ") : ""}`),
          el("div", { class: "snippet" }, h.text));
      })) : el("p", { class: "muted" }, "Nothing matched."))));
  } catch (exc) { out.replaceChildren(); report(exc); }
}

export function initSearch() {
  $("search-form").addEventListener("submit", search);
}
