"""Fidelity evaluation of a neural world against the real game (docs/design.md §11)."""
