"""aquavolt edge component."""
