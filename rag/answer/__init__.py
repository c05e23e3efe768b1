"""Answering: the prompts, the generation of a cited answer and its check, the streamed answer and the chat, the
compressed context, and the extractive answerer that needs no model."""
