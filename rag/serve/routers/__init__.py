"""One router per resource; each gets its services and the caller's key through ``rag.serve.deps``."""
