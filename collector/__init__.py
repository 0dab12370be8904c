"""aquavolt collector component."""
