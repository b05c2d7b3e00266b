"""Village Sync form engine: definitions, expressions, validation, instruments (no Flask, no DB)."""
