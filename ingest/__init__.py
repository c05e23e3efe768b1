"""Documents in: loaders, chunking, embedders and the incremental ingestion pipeline."""
