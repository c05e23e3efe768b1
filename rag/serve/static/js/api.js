// The server's REST API: one wrapper adds the key and turns errors into one message; server-sent events over fetch.
import { $, banner } from "./dom.js";

export const KEY = "rag-kb.key"; // sessionStorage: the API key, for this tab only

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function authHeaders() {
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

export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
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
export async function readEvents(response, onEvent) {
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

export function report(exc) {
  if (exc && exc.name === "AbortError") return;
  if (exc && exc.status === 401) return; // the key dialog says it
  banner(exc && exc.message ? exc.message : String(exc));
}

export function askForKey(reason) {
  $("key-button").hidden = false;
  $("key-reason").textContent = sessionStorage.getItem(KEY)
    ? `The key in use was refused: ${reason}` : `This server needs an API key: ${reason}`;
  banner("This server needs an API key. Enter one to continue (the API key button at the top).", "info");
  const dialog = $("key-dialog");
  if (!dialog.open) { $("key-input").value = ""; dialog.showModal(); }
}

// The key dialog: a saved key is kept for this tab, and ``onSaved`` starts the page again with it.
export function initKeyDialog(onSaved) {
  $("key-dialog").addEventListener("close", () => {
    if ($("key-dialog").returnValue !== "save") return;
    const key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
    banner(null);
    onSaved();
  });
  $("key-button").addEventListener("click", () => askForKey("enter or change it here."));
}
