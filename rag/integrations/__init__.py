"""Adapters for the frameworks people already use: ``rag.integrations.langchain`` and ``rag.integrations.llama_index``.

Each module imports its framework itself, so importing this package needs neither.
"""
