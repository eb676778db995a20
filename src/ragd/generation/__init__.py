"""Grounded answers: LLM providers, the provider router, prompts, citations, answers."""
