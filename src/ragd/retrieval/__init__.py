"""Retrieval: search over the derived indexes, fusion, and its evaluation."""
