"""ragd: a multi-tenant retrieval-augmented generation backend."""

__version__ = "0.1.0"

__all__ = ["__version__"]
