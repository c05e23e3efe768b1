"""Storage layer: vector backends, the chunk store and the store directory. Imports neither rag nor ingest."""
