"""Village Sync protocol: envelope, hybrid logical clock, ops and field-level merge (pure Python)."""
