"""`python -m worldsim.bench.sparse`: only the dense-vs-sparse rows of `worldsim bench --world neural
--compare` (base shapes with random weights at windows 32 and 128, eager / graph / graph+k, sessions
1/16/64), as one table and JSON, so they fit one device run. `--quick`: the test preset on CPU."""

from __future__ import annotations

import argparse
import logging

from worldsim.bench.dense_sparse import sparse_rows
from worldsim.bench.neural import format_table
from worldsim.bench.timing import environment, write_json_logged
from worldsim.device import resolve_device
from worldsim.errors import UserError
from worldsim.kernels.common import triton_importable

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> dict:
    """Measure the rows; returns `{"rows": [...], ...env}` (written to `args.json` after every row)."""
    device = resolve_device(args.device)
    if args.seconds <= 0:
        raise UserError(f"--seconds must be > 0, got {args.seconds}")
    cuda = device.type == "cuda"
    modes: tuple[str, ...] = ("eager", "graph") if cuda else ("eager",)
    if cuda and triton_importable():
        modes += ("graph+ring",)  # the ring kernel skips the frames the mask hides: where sparsity pays
    if cuda and args.kernels:
        modes += ("graph+k",)
    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        same = ("model", "dtype", "sessions")
        for r in rows:  # graph speed-up against the eager row of the same work
            eager = [
                e for e in rows if e["mode"] == "eager" and "fps" in e and all(e[k] == r[k] for k in same)
            ]
            r["vs_eager"] = r["fps"] / eager[0]["fps"] if eager and "fps" in r else None
        if args.json:
            write_json_logged(
                args.json, {"rows": rows, "seconds_per_row": args.seconds, **environment(device)}
            )

    dtype = "bf16" if cuda else "fp32"
    sparse_rows(device=device, seconds=args.seconds, quick=args.quick, modes=modes, dtype=dtype, on_row=add)
    return {"rows": rows, **environment(device)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldsim.bench.sparse", description=__doc__)
    p.add_argument("--device", default=None)
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per row")
    p.add_argument("--quick", action="store_true", help="the test preset at windows 8/16 (CPU-sized)")
    p.add_argument("--kernels", action="store_true", help="also graph + Triton kernels rows (CUDA)")
    p.add_argument("--json", default=None, metavar="FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = run(args)
    except UserError as e:
        p.exit(2, f"error: {e}\n")
    print(format_table(out["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
