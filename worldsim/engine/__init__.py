"""Speed applied from outside the model: the CUDA graph of a step (graph.py) and the latent-only engine
(latent.py), 8-bit weights (quant.py, fp8.py), fused kernels (fuse.py), the cached attention backends
(attention.py) and the CPU engine's dtype (dtype.py). `GraphWorld` (worldsim/graph_world.py) builds the
graphed world on them."""
