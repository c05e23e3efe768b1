"""A LlamaIndex query engine over a store: ``KnowledgeBaseRetriever`` feeding ``RetrieverQueryEngine``.

    rag ingest examples/corpus --store kb
    python examples/llama_index_query.py kb "How often should the air filter be cleaned?"
"""

import sys

from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.query_engine import RetrieverQueryEngine

from rag import KnowledgeBase
from rag.integrations.llama_index import KnowledgeBaseRetriever


class LocalLLM(CustomLLM):
    """The store's own offline LLM for LlamaIndex; any LlamaIndex LLM (OpenAI, Ollama...) fits here too."""

    kb: KnowledgeBase

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=4096, num_output=256, model_name=self.kb.generator.name)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
        return CompletionResponse(text="".join(self.kb.generator.stream([{"role": "user", "content": prompt}], 256)))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
        text = ""
        for piece in self.kb.generator.stream([{"role": "user", "content": prompt}], 256):
            text += piece
            yield CompletionResponse(text=text, delta=piece)


def query_engine(kb, llm):
    return RetrieverQueryEngine.from_args(KnowledgeBaseRetriever(kb=kb, k=4), llm=llm)


if __name__ == "__main__":
    store, question = sys.argv[1], sys.argv[2]
    with KnowledgeBase.open(store, create=False) as kb:
        response = query_engine(kb, LocalLLM(kb=kb)).query(question)
        print(response.response)
        for n, scored in enumerate(response.source_nodes, 1):
            m = scored.node.metadata
            print(f"[{n}] {m['source']}" + (f" p.{m['page']}" if m["page"] else "") + f"  score {scored.score:.3f}")
