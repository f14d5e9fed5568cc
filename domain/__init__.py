"""Pure, deterministic vocabulary and logic: safe to import from workflows. No I/O here."""
