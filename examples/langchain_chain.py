"""A LangChain chain over a store: ``KnowledgeBaseRetriever`` where ``FAISS.as_retriever()`` was.

    rag ingest examples/corpus --store kb
    python examples/langchain_chain.py kb "How often should the air filter be cleaned?"
"""

import sys

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from rag import KnowledgeBase
from rag.integrations.langchain import KnowledgeBaseRetriever

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer from the numbered passages only and cite them as [n]."),
    ("human", "{passages}\n\nQuestion: {question}"),
])


def numbered(docs):
    return "\n\n".join(f"[{n}] {d.page_content}" for n, d in enumerate(docs, 1))


def cited_chain(kb, llm):
    """question -> {"docs", "question", "answer"}; ``llm`` is any LangChain chat model or runnable."""
    retriever = KnowledgeBaseRetriever(kb=kb, k=4)  # was: FAISS.from_documents(chunks, embeddings).as_retriever()
    answer = RunnableLambda(lambda x: {"passages": numbered(x["docs"]), "question": x["question"]}) | PROMPT | llm
    return RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(answer=answer)


def local_llm(kb):
    """The store's own offline LLM as a chain step; a LangChain chat model (ChatOpenAI, ChatOllama...) fits here too."""
    roles = {"human": "user", "ai": "assistant", "system": "system"}
    return RunnableLambda(lambda prompt: "".join(kb.generator.stream(
        [{"role": roles[m.type], "content": m.content} for m in prompt.to_messages()], 256)))


if __name__ == "__main__":
    store, question = sys.argv[1], sys.argv[2]
    with KnowledgeBase.open(store, create=False) as kb:
        result = cited_chain(kb, local_llm(kb)).invoke(question)
        print(getattr(result["answer"], "content", result["answer"]))
        for n, doc in enumerate(result["docs"], 1):
            m = doc.metadata
            print(f"[{n}] {m['source']}" + (f" p.{m['page']}" if m["page"] else "") + " > ".join(["", *m["headings"]]))
