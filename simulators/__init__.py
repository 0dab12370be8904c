"""aquavolt simulators component."""
