"""The shared mode: a store's state in PostgreSQL and its vectors on Milvus, for several machines at once."""
