"""Ingestion: parsing (sandboxed), chunking, and the durable pipeline that indexes documents."""
