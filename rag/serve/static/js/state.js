// What the page's modules share: the chosen collection and chat, the answer running, and events between modules
// (a module announces what changed; the modules that care subscribe, so no module imports another's internals).

export const ALL = "all-collections";
export const PICKED = "rag-kb.collection"; // localStorage: the collection last chosen

export const state = { collections: [], collection: null, chat: null, chatCollection: null, running: null };

const listeners = new Map();

// Events: "collection" (name): another collection was picked; "documents-changed": a job committed; "view" (name):
// a view was shown.
export function on(name, listener) {
  if (!listeners.has(name)) listeners.set(name, []);
  listeners.get(name).push(listener);
}

// Calls every listener of ``name`` in the order they subscribed; resolves once the async ones are done.
export function emit(name, detail) {
  return Promise.all((listeners.get(name) || []).map((listener) => listener(detail)));
}
