"""flowpath offload."""
