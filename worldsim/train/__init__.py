"""Training stages (autoencoder, teacher) and the export of a shipped checkpoint (DESIGN §6)."""
