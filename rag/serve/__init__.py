"""``rag serve``: the knowledge base as an HTTP service (OpenAI-compatible API, REST resources, background ingest).

Needs the ``server`` extra: ``pip install 'rag-kb[server]'``.
"""
