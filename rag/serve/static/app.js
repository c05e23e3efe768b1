// rag-kb chat page: plain JavaScript against the server's own REST API, no libraries, nothing from outside.
"use strict";

const ALL = "all-collections";
const KEY = "rag-kb.key";         // sessionStorage: the API key, for this tab only
const PICKED = "rag-kb.collection"; // localStorage: the collection last chosen

const state = { collections: [], collection: null, chat: null, chatCollection: null, running: null, docsTimer: null };

// ---------- small helpers ----------

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
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

const isChinese = (text) => /[\u3400-\u9fff]/.test(text || "");
const words = {
  en: { sources: "Sources", notFound: "Not found in the documents", stopped: "Stopped.", thinking: "Searching the documents…",
    reading: (n) => `Reading ${n} passage${n === 1 ? "" : "s"} and writing the answer…`,
    unsupported: "No passage says this in these words (it may in another language); check before relying on it:" },
  zh: { sources: "来源", notFound: "文档中没有找到答案", stopped: "已停止。", thinking: "正在检索文档…",
    reading: (n) => `正在阅读 ${n} 段文字并撰写回答…`, unsupported: "以下内容在文档原文中找不到对应的说法（也许以另一种语言写成），请核实：" },
};
const say = (question, key) => words[isChinese(question) ? "zh" : "en"][key];

function pagesLabel(s) {
  if (s.pages) return `p.${s.pages}`;
  if (s.page) return s.page_end && s.page_end !== s.page ? `p.${s.page}-${s.page_end}` : `p.${s.page}`;
  return "";
}

function bytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function when(ts) { // seconds since the epoch, or an ISO date
  if (!ts) return "";
  const d = new Date(typeof ts === "number" ? ts * 1000 : ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toLocaleDateString() === new Date().toLocaleDateString() ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString();
}

function banner(message, kind = "error") {
  const b = $("banner");
  if (!message) { b.hidden = true; b.textContent = ""; return; }
  b.textContent = message;
  b.className = "banner" + (kind === "info" ? " info" : "");
  b.hidden = false;
}

// ---------- the API: one wrapper adds the key and turns errors into one message ----------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = (body.error && body.error.message) || body.detail || message;
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, message);
}

async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "The server cannot be reached. Is `rag serve` still running?");
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401) askForKey(error.message);
    throw error;
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

// Server-sent events over fetch (EventSource can neither POST nor send the key): calls onEvent(name, data).
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

function report(exc) {
  if (exc && exc.name === "AbortError") return;
  if (exc && exc.status === 401) return; // the key dialog says it
  banner(exc && exc.message ? exc.message : String(exc));
}

// ---------- API key ----------

function askForKey(reason) {
  $("key-button").hidden = false;
  $("key-reason").textContent = sessionStorage.getItem(KEY)
    ? `The key in use was refused: ${reason}` : `This server needs an API key: ${reason}`;
  banner("This server needs an API key. Enter one to continue (the API key button at the top).", "info");
  const dialog = $("key-dialog");
  if (!dialog.open) { $("key-input").value = ""; dialog.showModal(); }
}

$("key-dialog").addEventListener("close", () => {
  if ($("key-dialog").returnValue !== "save") return;
  const key = $("key-input").value.trim();
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  banner(null);
  start();
});
$("key-button").addEventListener("click", () => askForKey("enter or change it here."));

// ---------- views ----------

function showView(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.view === name;
    tab.setAttribute("aria-selected", String(on));
    $(`view-${tab.dataset.view}`).hidden = !on;
  }
  if (name === "documents") loadDocuments();
  if (name === "chat") $("question").focus();
}
for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => showView(tab.dataset.view));

// ---------- collections ----------

async function loadCollections() {
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

function pick(name) {
  if (name === state.collection) return;
  state.collection = name;
  localStorage.setItem(PICKED, name);
  $("collection").value = name;
  for (const li of $("collections").children) li.setAttribute("aria-current", String(li.dataset.name === name));
  if (state.chat && state.chatCollection !== name) newChat();
  if (!$("view-documents").hidden) loadDocuments();
}
$("collection").addEventListener("change", (e) => pick(e.target.value));

$("new-collection").addEventListener("submit", async (e) => {
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
});

// ---------- documents and uploads ----------

function needOne() {
  if (!state.collection) { banner("Create a collection first (left, under Collections)."); return false; }
  if (state.collection === ALL) { banner("Choose one collection (not all) to see or change its documents."); return false; }
  return true;
}

async function loadDocuments() {
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
  await Promise.all([loadCollections().catch(report), loadDocuments()]);
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

const zone = $("dropzone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); uploadFiles([...e.dataTransfer.files]); });
$("file-input").addEventListener("change", (e) => { uploadFiles([...e.target.files]); e.target.value = ""; });

// ---------- chat ----------

function clearMessages() {
  $("messages").replaceChildren(el("p", { class: "empty muted", testid: "chat-empty" },
    "Ask a question about the documents of the chosen collection. Answers cite their passages as [1], [2]…; click one to read it in its place."));
}

function newChat() {
  stopAnswer();
  state.chat = null;
  state.chatCollection = null;
  clearMessages();
  markCurrentChat();
  $("question").focus();
}
$("new-chat").addEventListener("click", newChat);

// The answer text with each [n] (or [1, 2]) turned into a button that opens passage n.
function answerNodes(text, sources) {
  const byN = new Map(sources.map((s) => [s.n, s]));
  const out = [];
  let last = 0;
  for (const m of text.matchAll(/\[(\d+(?:\s*[,，、]\s*\d+)*)\]/g)) {
    const numbers = m[1].split(/\s*[,，、]\s*/).map(Number);
    if (!numbers.every((n) => byN.has(n))) continue;
    out.push(text.slice(last, m.index));
    for (const n of numbers) {
      const s = byN.get(n);
      out.push(el("button", { type: "button", class: "chip", testid: "citation", "data-n": n,
        title: `${s.name} ${pagesLabel(s)}`.trim(), "aria-label": `Source ${n}: ${s.name} ${pagesLabel(s)}`.trim(),
        onclick: () => openPassage(s) }, String(n)));
    }
    last = m.index + m[0].length;
  }
  out.push(text.slice(last));
  return out;
}

function assistantBubble(question) {
  const text = el("div", { class: "text", testid: "answer-text" });
  const node = el("article", { class: "msg assistant streaming", testid: "answer", "aria-busy": "true", lang: isChinese(question) ? "zh" : "en" }, text);
  $("messages").append(node);
  return { node, text };
}

function showAnswer(bubble, question, answer, answered, sources, unsupported = []) {
  const { node, text } = bubble;
  node.classList.remove("streaming");
  node.setAttribute("aria-busy", "false");
  node.classList.toggle("not-found", !answered);
  node.dataset.answered = String(answered);
  node.querySelector(".notice")?.remove();
  node.querySelector(".sources")?.remove();
  if (!answered) node.prepend(el("div", { class: "notice", testid: "not-found" }, say(question, "notFound")));
  text.replaceChildren(...answerNodes(answer, sources));
  node.querySelector(".unsupported")?.remove();
  if (answered && unsupported.length) {
    node.append(el("div", { class: "notice unsupported", testid: "unsupported" }, say(question, "unsupported"),
      el("ul", {}, unsupported.map((sentence) => el("li", {}, sentence)))));
  }
  const cited = sources.filter((s) => s.cited);
  if (answered && cited.length) {
    node.append(el("ul", { class: "sources", testid: "sources", "aria-label": say(question, "sources") },
      cited.map((s) => el("li", {}, el("button", { type: "button", class: "link", testid: "source", onclick: () => openPassage(s) },
        `[${s.n}] ${s.name}${pagesLabel(s) ? ", " + pagesLabel(s) : ""}${s.headings.length ? " — " + s.headings.join(" › ") : ""}`)))));
  }
}

function userBubble(question) {
  $("messages").querySelector(".empty")?.remove();
  $("messages").append(el("div", { class: "msg user", testid: "question-bubble", lang: isChinese(question) ? "zh" : "en" }, question));
}

function scrollDown() {
  const m = $("messages");
  m.scrollTop = m.scrollHeight;
  if (m.scrollHeight <= m.clientHeight) window.scrollTo(0, document.documentElement.scrollHeight);  // a narrow page scrolls whole
}

function running(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  if (!on) $("question").focus();
}

function stopAnswer() {
  if (state.running) state.running.abort();
}
$("stop").addEventListener("click", stopAnswer);

async function ask(question) {
  if (!state.collection) { banner("Create a collection and upload documents first (Documents)."); return; }
  banner(null);
  if (!state.chat || state.chatCollection !== state.collection) {
    const chat = await api("/chats", { method: "POST", body: { collection: state.collection, title: question.slice(0, 200) } });
    state.chat = chat.id;
    state.chatCollection = chat.collection;
    loadChats().catch(report);  // the new chat is in the history at once, not after its first answer
  }
  userBubble(question);
  const bubble = assistantBubble(question);
  bubble.text.textContent = say(question, "thinking");
  scrollDown();
  const controller = new AbortController();
  state.running = controller;
  running(true);
  let sources = [], raw = "", finished = false;
  try {
    const response = await api(`/chats/${state.chat}/messages`, { method: "POST", body: { question, stream: true }, signal: controller.signal, raw: true });
    await readEvents(response, (name, data) => {
      if (name === "sources") {
        sources = data.sources;
        if (!raw) bubble.text.textContent = say(question, "reading")(sources.length);
      } else if (name === "token") {
        raw += data.text;
        if (!/^\s*NOT_?F?O?U?N?D?/i.test(raw) || raw.trim().length > 9) bubble.text.replaceChildren(...answerNodes(raw, sources));
      } else if (name === "answer") {
        finished = true;
        const cited = new Set(data.citations.map((c) => c.n));
        showAnswer(bubble, question, data.answer, data.answered, sources.map((s) => ({ ...s, cited: cited.has(s.n) })),
          data.unsupported || []);
      } else if (name === "error") {
        finished = true;
        bubble.node.classList.remove("streaming");
        bubble.node.setAttribute("aria-busy", "false");
        bubble.text.replaceChildren(el("span", { class: "error", testid: "answer-error" }, data.error.message));
      }
      scrollDown();
    });
    if (!finished) throw new ApiError(0, "the answer stopped before it was complete (the server may have restarted)");
    loadChats().catch(report);
  } catch (exc) {
    bubble.node.classList.remove("streaming");
    bubble.node.setAttribute("aria-busy", "false");
    if (exc.name === "AbortError") {
      bubble.node.dataset.stopped = "true";
      if (!raw) bubble.text.replaceChildren();  // no "searching…" left standing once stopped
      bubble.node.append(el("div", { class: "stopped", testid: "stopped" }, say(question, "stopped")));
    } else {
      bubble.text.append(el("div", { class: "error", testid: "answer-error" }, exc.message));
    }
  } finally {
    state.running = null;
    running(false);
  }
}

$("ask-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value.trim();
  if (!q || state.running) return;
  $("question").value = "";
  ask(q).catch(report);
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("ask-form").requestSubmit(); }
});

// ---------- chat history ----------

function markCurrentChat() {
  for (const li of $("chats").children) li.setAttribute("aria-current", String(li.dataset.id === state.chat));
}

async function loadChats() {
  const { chats } = await api("/chats");
  $("chats").replaceChildren(...chats.map((c) => el("li", {
    tabindex: 0, testid: "chat", "data-id": c.id, onclick: () => openChat(c.id),
    onkeydown: (e) => { if (e.key === "Enter") openChat(c.id); },
  }, el("span", { class: "label", title: c.title || "untitled" }, c.title || "untitled"),
    el("span", { class: "counts" }, c.collection === ALL ? "all" : c.collection),
    el("button", { class: "quiet", testid: "delete-chat", "aria-label": `Delete the chat ${c.title || c.id}`,
      onclick: (e) => { e.stopPropagation(); deleteChat(c); } }, "✕"))));
  if (!chats.length) $("chats").append(el("li", { class: "muted" }, "No chats yet."));
  markCurrentChat();
}

async function openChat(id) {
  stopAnswer();
  try {
    const chat = await api(`/chats/${id}`);
    state.chat = chat.id;
    state.chatCollection = chat.collection;
    if (chat.collection !== state.collection && [...$("collection").options].some((o) => o.value === chat.collection)) {
      state.collection = chat.collection;
      $("collection").value = chat.collection;
      localStorage.setItem(PICKED, chat.collection);
    }
    clearMessages();
    if (chat.turns.length) $("messages").replaceChildren();
    for (const t of chat.turns) {
      userBubble(t.question);
      showAnswer(assistantBubble(t.question), t.question, t.answer, t.answered, t.citations);
    }
    markCurrentChat();
    showView("chat");
    scrollDown();
  } catch (exc) { report(exc); }
}

async function deleteChat(chat) {
  if (!confirm(`Delete the chat "${chat.title || "untitled"}"?`)) return;
  try {
    await api(`/chats/${chat.id}`, { method: "DELETE" });
    if (state.chat === chat.id) newChat();
    await loadChats();
  } catch (exc) { report(exc); }
}

// ---------- passages ----------

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

function markdownNodes(text) {
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

const passageNode = (attrs, text) => el("div", attrs, markdownNodes(text));

async function openPassage(source) {
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
$("passage").addEventListener("click", (e) => { if (e.target === $("passage") || e.target.closest("[data-close]")) $("passage").close(); });

// ---------- search ----------

$("search-form").addEventListener("submit", async (e) => {
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
});

// ---------- start ----------

document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.running) stopAnswer(); });

async function start() {
  try {
    await loadCollections();
    await loadChats();
    if (!$("view-documents").hidden) await loadDocuments();
    if (sessionStorage.getItem(KEY)) $("key-button").hidden = false;
  } catch (exc) { report(exc); }
}
start();
