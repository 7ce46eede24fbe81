"""flowpath cli."""
