"""Identity and access: tokens, passwords, revocation, API keys and the services using them."""
