// A collection's documents: the table, re-indexing and deleting, uploads with their progress and each file's stage.
import { api, askForKey, authHeaders, readEvents, report } from "./api.js";
import { $, banner, bytes, el, when } from "./dom.js";
import { ALL, emit, on, state } from "./state.js";
import { visible } from "./views.js";

function needOne() {
  if (!state.collection) { banner("Create a collection first (left, under Collections)."); return false; }
  if (state.collection === ALL) { banner("Choose one collection (not all) to see or change its documents."); return false; }
  return true;
}

export async function loadDocuments() {
  const body = $("documents");
  if (!state.collection || state.collection === ALL) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "muted" },
      state.collection ? "Choose one collection to see its documents." : "No collection yet.")));
    $("documents-count").textContent = "";
    return;
  }
  const name = state.collection;
  try {
    const { documents } = await api(`/collections/${encodeURIComponent(name)}/documents`);
    if (name !== state.collection) return;
    $("documents-count").textContent = `(${documents.length})`;
    body.replaceChildren(...documents.map((d) => el("tr", { testid: "document", "data-name": d.name },
      el("td", {}, d.name, d.warnings.length ? el("div", { class: "warn" }, d.warnings.join("; ")) : null),
      el("td", { "data-label": "Chunks" }, String(d.chunks)), el("td", { "data-label": "Size" }, bytes(d.bytes)),
      el("td", { "data-label": "Added" }, when(d.ingested_at)),
      el("td", { class: "actions" },
        el("button", { class: "quiet", testid: "reindex", "aria-label": `Re-index ${d.name}`, onclick: () => changeDocument(d, "reindex") }, "Re-index"),
        el("button", { class: "quiet", testid: "delete-document", "aria-label": `Delete ${d.name}`, onclick: () => changeDocument(d, "delete") }, "Delete")))));
    if (!documents.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No documents yet: drop files above.")));
  } catch (exc) { report(exc); }
}

async function changeDocument(doc, action) {
  if (action === "delete" && !confirm(`Delete ${doc.name} from ${state.collection}? Its passages leave the index.`)) return;
  const base = `/collections/${encodeURIComponent(state.collection)}/documents/${doc.id}`;
  const row = uploadRow(doc.name, action === "delete" ? "deleting" : "re-indexing");
  row.progress.value = 100;
  try {
    const job = action === "delete" ? await api(base, { method: "DELETE" }) : await api(`${base}/reindex`, { method: "POST" });
    await watchJob(job.id, new Map([[doc.name, row]]));
  } catch (exc) { row.fail(exc.message); }
}

const STAGES = { queued: "queued", running: "starting…", parsing: "parsing…", embedding: "embedding…", committed: "committed", failed: "failed", unchanged: "already indexed" };

function uploadRow(name, first = "uploading") {
  const progress = el("progress", { max: 100, value: 0, testid: "upload-progress", "aria-label": `${name}: progress` });
  const stage = el("span", { class: "stage", testid: "upload-stage" }, first);
  const item = el("li", { testid: "upload", "data-name": name }, el("span", { class: "label" }, name), progress, stage);
  $("uploads").prepend(item);
  const set = (status, reason = "") => {
    stage.className = `stage ${status}`;
    stage.dataset.status = status;
    stage.textContent = (STAGES[status] || status) + (reason ? `: ${reason}` : "");
  };
  return { item, progress, set, fail: (reason) => { set("failed", reason); progress.value = 0; } };
}

function uploadFiles(files) {
  if (!needOne() || !files.length) return;
  banner(null);
  upload(state.collection, files);
}

// One request and one job for all the files dropped together (a job's worker starts once); each file's bar
// follows the bytes sent, as the browser sends the files one after another.
function upload(collection, files) {
  const rows = new Map(files.map((f) => [f.name, uploadRow(f.name)]));
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const total = files.reduce((n, f) => n + f.size, 0) || 1;
  const xhr = new XMLHttpRequest(); // fetch reports no upload progress
  xhr.open("POST", `/collections/${encodeURIComponent(collection)}/documents`);
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    let sent = (e.loaded / e.total) * total, offset = 0;
    for (const f of files) {
      const row = rows.get(f.name);
      row.progress.value = Math.round(100 * Math.min(1, Math.max(0, (sent - offset) / (f.size || 1))));
      offset += f.size;
    }
  };
  const failAll = (message) => { for (const row of rows.values()) row.fail(message); };
  xhr.onerror = () => failAll("the upload was interrupted (is the server running?)");
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status !== 202) {
      const message = (body.error && body.error.message) || `${xhr.status} ${xhr.statusText}`;
      if (xhr.status === 401) askForKey(message);
      failAll(message);
      return;
    }
    for (const row of rows.values()) { row.progress.value = 100; row.set("queued"); }
    watchJob(body.id, rows).catch((exc) => failAll(exc.message));
  };
  xhr.send(form);
}

// Follows a job's event stream (polling if it breaks) and shows each file's stage on its row (``rows``: name -> row).
async function watchJob(id, rows) {
  let job = null;
  const show = (j) => { job = j; showJob(j, rows); };
  try {
    await readEvents(await api(`/jobs/${id}/events`, { raw: true }), (name, data) => { if (name === "job") show(data); });
  } catch (exc) { if (exc.status === 401) throw exc; }
  while (!job || !["committed", "failed"].includes(job.status)) {
    await new Promise((r) => setTimeout(r, 1000));
    show(await api(`/jobs/${id}`));
  }
  await emit("documents-changed");
}

function showJob(job, rows) {
  for (const file of job.files) {
    const row = rows.get(file.name);
    if (!row) continue;
    row.item.dataset.job = job.id;
    if (job.status === "failed" && !["committed", "failed", "unchanged"].includes(file.status)) row.set("failed", job.error);
    else row.set(file.status === "queued" && job.status === "running" ? "running" : file.status, file.reason);
  }
}

export function initDocuments() {
  const zone = $("dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); uploadFiles([...e.dataTransfer.files]); });
  $("file-input").addEventListener("change", (e) => { uploadFiles([...e.target.files]); e.target.value = ""; });
  on("collection", () => { if (visible("documents")) loadDocuments(); });
  on("view", (name) => { if (name === "documents") loadDocuments(); });
  on("documents-changed", () => loadDocuments());
}
