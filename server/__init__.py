"""The Village Sync county server (Flask)."""
