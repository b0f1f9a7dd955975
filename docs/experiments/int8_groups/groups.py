"""Does int8 with per-group scales along the input keep tiny-student's still view? Block linears fake-quantized
(int8 with one scale per `g` input columns of each output row, read back to bf16), everything else as shipped."""
import os, sys, torch
from worldsim.checkpoint import load_checkpoint, save_checkpoint
src = "/work/main/checkpoints/tiny-student.safetensors"
ck = load_checkpoint(src)
def fq(w, g):
    o, i = w.shape
    wg = w.float().reshape(o, i // g, g)
    s = wg.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127.0
    return ((wg / s).round().clamp(-127, 127) * s).reshape(o, i).to(w.dtype)
for g in [int(a) for a in sys.argv[1:]]:
    dit = {}
    for k, t in ck.tensors["dit"].items():
        lin = k.startswith("blocks.") and k.endswith(".weight") and t.dim() == 2
        dit[k] = fq(t, g if g > 0 else t.shape[1]) if lin else t
    groups = {**ck.tensors, "dit": dit}
    p = f"/tmp/q8g-{g}.safetensors"
    save_checkpoint(p, config=ck.config, tensors=groups, metrics=ck.metrics)
    print(g, p, round(os.path.getsize(p) / 2**20, 2), "MiB")
