"""``python -m server …`` runs the county-server CLI."""

from server.cli import main

main()
