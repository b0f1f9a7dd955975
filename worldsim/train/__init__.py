"""Training stages (autoencoder, teacher) and the export of a shipped checkpoint (docs/design.md §7)."""
