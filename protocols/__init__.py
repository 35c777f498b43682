"""Training protocols: sequences of substrate manipulations (see docs/layout.md)."""
