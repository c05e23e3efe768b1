// The chat: asking (the answer streamed, its citations turned into buttons), stopping, and the chat history.
import { ApiError, api, readEvents, report } from "./api.js";
import { $, banner, el, isChinese, pagesLabel, say } from "./dom.js";
import { openPassage } from "./passages.js";
import { ALL, PICKED, on, state } from "./state.js";
import { showView } from "./views.js";

function clearMessages() {
  $("messages").replaceChildren(el("p", { class: "empty muted", testid: "chat-empty" },
    "Ask a question about the documents of the chosen collection. Answers cite their passages as [1], [2]…; click one to read it in its place."));
}

export function newChat() {
  stopAnswer();
  state.chat = null;
  state.chatCollection = null;
  clearMessages();
  markCurrentChat();
  $("question").focus();
}

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

export function stopAnswer() {
  if (state.running) state.running.abort();
}

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

// The chat history at the left.

function markCurrentChat() {
  for (const li of $("chats").children) li.setAttribute("aria-current", String(li.dataset.id === state.chat));
}

export async function loadChats() {
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


export function initChat() {
  $("new-chat").addEventListener("click", newChat);
  $("stop").addEventListener("click", stopAnswer);
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
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.running) stopAnswer(); });
  on("collection", (name) => { if (state.chat && state.chatCollection !== name) newChat(); });
  on("view", (name) => { if (name === "chat") $("question").focus(); });
}
