"""flowpath swpath."""
