"""Adapting to the user's documents: the embedder fine-tuner, the LLM's LoRA fine-tuner and the synthetic
questions both train on."""
