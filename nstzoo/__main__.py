"""``python -m nstzoo`` runs the command line."""

from .cli import main

main()
