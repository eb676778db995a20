"""LLM provider implementations (one module each) and their factory."""
