"""sources/synthetic."""
