"""The per-frame engine, applied from outside the model: the frame function captured as one CUDA graph
(graph.py, world.py, latent.py), 8-bit weights (quant.py, fp8.py), fused kernels (fuse.py) and the
cached attention backends (attention.py)."""
