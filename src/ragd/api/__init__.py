"""HTTP layer: routes, dependencies, error mapping. Knows HTTP, delegates to services."""
