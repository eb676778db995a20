"""ML model runtimes: the lazy registry, embedders, rerankers and keyword extraction."""
