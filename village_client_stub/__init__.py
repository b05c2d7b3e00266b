"""The village device: local SQLite store, CLI and sync client standing in for the tablet app."""
