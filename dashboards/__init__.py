"""aquavolt dashboards component."""
