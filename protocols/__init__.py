"""Training protocols: sequences of substrate manipulations (see ARCHITECTURE.md)."""
