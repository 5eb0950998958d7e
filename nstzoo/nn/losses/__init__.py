"""Loss terms shared by several stylizers' training recipes, one family per module."""
