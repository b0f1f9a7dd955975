"""Fidelity evaluation of a neural world against the real game (DESIGN §10)."""
