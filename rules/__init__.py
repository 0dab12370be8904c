"""aquavolt rules component."""
