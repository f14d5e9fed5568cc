"""Every side effect the runbooks have, one module per system touched. All idempotent."""
