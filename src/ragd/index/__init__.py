"""Derived search indexes (BM25 and vectors), one partition per tenant, rebuilt from SQL."""
