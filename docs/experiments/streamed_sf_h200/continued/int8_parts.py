"""Which 8-bit part loses the still view: variants of tiny-student's storage, scored on 300 idle frames."""
import sys, torch
from worldsim.checkpoint import load_checkpoint, save_checkpoint
from worldsim.storage8 import quantize_stored
from worldsim.engine.quant import int8_tensors, load_dit
src = "/work/main/checkpoints/tiny-student.safetensors"
ck = load_checkpoint(src)
bf = lambda s: {k: (t.to(torch.bfloat16) if t.is_floating_point() else t) for k, t in s.items()}
base = {g: bf(s) for g, s in ck.tensors.items()}
dit8 = int8_tensors(load_dit(ck, weights="int8"), torch.bfloat16)
variants = {
    "A_blocks_int8": {**base, "dit": dit8, "autoencoder": quantize_stored(base["autoencoder"])},
    "C_ae_int8_only": {**base, "autoencoder": quantize_stored(base["autoencoder"])},
    "D_rest_int8_blocks_bf16": None,
}
# D: every DiT matrix but the blocks' linears stored int8 (quantize_stored), the blocks' linears bf16
blocks = {k for k in dit8 if k.startswith("blocks.")}
rest = {k: v for k, v in base["dit"].items() if not k.startswith("blocks.")}
variants["D_rest_int8_blocks_bf16"] = {**base, "dit": {**{k: v for k, v in base["dit"].items() if k.startswith("blocks.")}, **quantize_stored(rest)}}
for name, groups in variants.items():
    p = f"/tmp/q8-{name}.safetensors"
    save_checkpoint(p, config=ck.config, tensors=groups, metrics=ck.metrics)
    import os; print(name, round(os.path.getsize(p) / 2**20, 2), "MiB")
