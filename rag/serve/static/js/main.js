// rag-kb chat page: plain JavaScript modules against the server's own REST API, no libraries, no build step,
// nothing from outside. Each module owns one part of the page and wires its own controls (its init function).
import { KEY, initKeyDialog, report } from "./api.js";
import { initChat, loadChats } from "./chat.js";
import { initCollections, loadCollections } from "./collections.js";
import { $ } from "./dom.js";
import { initDocuments, loadDocuments } from "./documents.js";
import { initPassages } from "./passages.js";
import { initSearch } from "./search.js";
import { initViews, visible } from "./views.js";

async function start() {
  try {
    await loadCollections();
    await loadChats();
    if (visible("documents")) await loadDocuments();
    if (sessionStorage.getItem(KEY)) $("key-button").hidden = false;
  } catch (exc) { report(exc); }
}

initKeyDialog(start);
initViews();
initCollections();
initChat(); // before the documents: a new collection starts a new chat first, as before
initDocuments();
initPassages();
initSearch();
start();
