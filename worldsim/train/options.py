"""The flags of every training stage and of the export, in a module without torch: `worldsim --help`
builds all of them, and the stage modules (which load torch) are imported only when a stage runs."""

from __future__ import annotations

import argparse

SOURCES = ("store", "live")  # what a trainer draws from: the latent store, or clips rendered live
# (trajectories, frames each) by device: a GPU holds a million frames; a CPU fills a small store quickly
STORE_DEFAULTS = {"cuda": (1024, 512), "cpu": (32, 256)}
CONTEXTS = ("self", "true", "diffusion-forced")  # what a self-forcing rollout's cache holds
START_SEEDS = 16  # spawn points an export stores as start latents


def add_common_arguments(p: argparse.ArgumentParser, *, steps: int, batch: int, lr: float) -> None:
    p.add_argument("--preset", default="tiny", help="model size preset: test, tiny, base (default tiny)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps})")
    p.add_argument(
        "--minutes", type=float, default=None, help="also stop after this many minutes of training"
    )
    p.add_argument("--batch", type=int, default=batch, help=f"batch size (default {batch})")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    p.add_argument("--seed", type=int, default=0, help="data and init seed")
    p.add_argument("--out", required=True, help="output directory (train state, plots, metrics)")
    p.add_argument("--resume", action="store_true", help="continue from the train state in --out")
    p.add_argument("--ckpt-every", type=int, default=500, help="save the train state every N steps")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs every --log-every steps)")
    p.add_argument("--log-every", type=int, default=100, help="log a line every N steps")


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    """The `--source` / `--store-*` / `--data` flags every trainer shares."""
    p.add_argument("--source", choices=SOURCES, default="store",
                   help="store (default): latent trajectories encoded once and held on the device; live: render "
                        "and encode every batch")  # fmt: skip
    p.add_argument("--data", default=None, metavar="DIR",
                   help="train on a dataset folder (`worldsim collect`) instead of the built-in game")  # fmt: skip
    gpu, cpu = STORE_DEFAULTS["cuda"], STORE_DEFAULTS["cpu"]
    p.add_argument("--store-trajectories", type=int, default=None,
                   help=f"trajectories in the store (default {gpu[0]} on a GPU, {cpu[0]} on a CPU)")  # fmt: skip
    p.add_argument("--store-length", type=int, default=None,
                   help=f"frames per stored trajectory (default {gpu[1]} on a GPU, {cpu[1]} on a CPU; at least a "
                        f"clip)")  # fmt: skip
    p.add_argument("--refresh-every", type=int, default=200,
                   help="re-render part of the store every N steps (default 200; 0 never)")  # fmt: skip
    p.add_argument("--refresh-fraction", type=float, default=0.05,
                   help="fraction of the store re-rendered per refresh (default 0.05)")  # fmt: skip


def add_autoencoder_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, steps=3000, batch=64, lr=1e-3)
    p.add_argument("--heldout", type=int, default=256,
                   help="held-out frames for PSNR (other seeds; with --data: the dataset's held-out split)")  # fmt: skip
    p.add_argument("--data", default=None, metavar="DIR",
                   help="train on the frames of a dataset folder (`worldsim collect`; its train split, at its frame "
                        "size) instead of the built-in game")  # fmt: skip
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this autoencoder: a shipped checkpoint (name or .safetensors, 8-bit or "
                        "float) or an autoencoder.pt")  # fmt: skip
    p.add_argument("--motion-share", type=float, default=0.0, metavar="S",
                   help="train on pairs of consecutive frames, a share S of the loss the mean over the pixels that "
                        "change, however few: small moving objects (an Atari ball) are what a world model needs "
                        "and what a frame-wide mean lets go (own games: 0.5; 0: off)")  # fmt: skip
    p.add_argument("--downsample", type=int, default=None, metavar="S",
                   help="spatial factor of the latent grid (default: the preset's, 8 for tiny): 4 gives a 64x64 "
                        "frame a 16x16 grid whose cells can place a 1-pixel object (pair it with the teacher's "
                        "--patch-size 2 for the same 64 tokens a frame); a new run only")  # fmt: skip
    p.add_argument("--latent-channels", type=int, default=None, metavar="C",
                   help="channels of the latent grid (default: the preset's, 16 for tiny); more keeps small "
                        "details such as an Atari ball, at a larger latent store; a new run only")  # fmt: skip


def add_teacher_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, steps=20_000, batch=32, lr=5e-4)
    p.add_argument(
        "--autoencoder", default=None, metavar="PATH", help="autoencoder.pt from `worldsim train autoencoder`"
    )
    p.add_argument(
        "--clip-frames", type=int, default=None, help="frames per training clip (default 1.5 x window)"
    )
    p.add_argument(
        "--key-dropout", type=float, default=0.1, help="fraction of frames trained with the null key state"
    )
    p.add_argument(
        "--context-prob", type=float, default=0.5, help="fraction of frames at a small (context) noise level"
    )
    p.add_argument("--context-max", type=float, default=0.1, help="largest context noise level")
    p.add_argument("--context-aug-prob", type=float, default=0.0,
                   help="fraction of context frames at a strong level in [0, --context-aug-max] instead (the "
                        "recipe for long rollouts: 0.3)")  # fmt: skip
    p.add_argument("--context-aug-max", type=float, default=0.5, help="largest strong context level (0.5)")
    p.add_argument("--context-offset", type=float, default=0.0,
                   help="std of a per-channel colour offset added to --context-offset-prob of the context frames "
                        "(left out of the loss): a guard against slow brightness drift (recipe: 0.3)")  # fmt: skip
    p.add_argument("--context-offset-prob", type=float, default=0.25,
                   help="fraction of context frames that get the offset (0.25)")  # fmt: skip
    p.add_argument("--own-prob", type=float, default=0.0,
                   help="fraction of each batch's rows whose context frames are the model's own one-pass "
                        "predictions (no gradient; left out of the loss; recipe: 0.25)")  # fmt: skip
    p.add_argument("--motion-share", type=float, default=0.0, metavar="S",
                   help="a share S of the loss the mean weighted by each latent token's change from the frame "
                        "before: where little of the frame moves (an Atari ball and paddle) the loss goes where "
                        "the keys act (own games: 0.5; 0: the plain mean)")  # fmt: skip
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the exported weights")
    p.add_argument("--warmup", type=int, default=500, help="LR warmup steps (at most steps/10)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip")
    p.add_argument("--compile", action="store_true", help="torch.compile the DiT for training")
    p.add_argument("--attention", choices=["sdpa", "flex"], default=None,
                   help="attention backend of the training forward (default: the config's; flex needs CUDA "
                        "and skips the masked tiles of the block-causal mask)")  # fmt: skip
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop this run after N steps; the LR schedule still spans --steps (a job's time "
                        "slice: --resume goes on)")  # fmt: skip
    add_store_arguments(p)
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from this teacher's weights (teacher.pt or .safetensors; its config and autoencoder), "
        "e.g. a dense teacher fine-tuned with --local-window",
    )
    p.add_argument(
        "--patch-size",
        type=int,
        default=None,
        metavar="P",
        help="latent pixels per token side, a new run only (default: the preset's tokens per frame on the "
        "autoencoder's grid: 2 on a --downsample 4 autoencoder's 16x16)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="W",
        help="attention window in frames (default: the preset's or --init's); the cache deploys the same",
    )
    p.add_argument(
        "--local-window",
        type=int,
        default=None,
        metavar="L",
        help="sparse attention: local layers see the last L frames (+ sinks); 0 = dense (default: config's)",
    )
    p.add_argument(
        "--global-every",
        type=int,
        default=None,
        metavar="G",
        help="with --local-window: every G-th layer sees the whole window (0 = all layers local)",
    )
    p.add_argument(
        "--prev-frame",
        action="store_const",
        const=True,
        default=None,
        help="frame stacking: each frame's tokens also take the previous frame's latents and level "
        "(a new run, or grown from --init through a zero-initialised projection: it starts as --init)",
    )
    p.add_argument(
        "--export",
        default=None,
        metavar="FILE",
        help="after training, export the EMA model to FILE (.safetensors)",
    )


def add_self_forcing_arguments(p: argparse.ArgumentParser) -> None:
    # Small steps: Adam with beta1 = 0 moves every weight by ~lr on its first steps (2 tiny-CPU steps at
    # 1e-4 moved the critic as far from the teacher as the student is: DMD gradient norm 0.9, vs 0.1 at 1e-5)
    add_common_arguments(p, steps=2_000, batch=8, lr=1e-5)
    p.add_argument(
        "--teacher", default=None, help="teacher.pt train state, or a checkpoint name / .safetensors"
    )
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start the student from this checkpoint (e.g. a shipped student, 8-bit or float) "
                        "instead of the teacher's weights; its config must match the teacher's")  # fmt: skip
    p.add_argument("--context", default="self", choices=CONTEXTS,
                   help="self: self-forcing (own frames in the cache); true / diffusion-forced: the baseline")  # fmt: skip
    p.add_argument("--critic-steps", type=int, default=5, help="critic updates per generator update")
    p.add_argument("--critic-lr", type=float, default=1e-5, help="critic learning rate")
    p.add_argument("--rollout-frames", type=int, default=None, metavar="N",
                   help="streaming (--context self): each batch row continues its rollout across iterations "
                        "for N frames before it restarts from real context (default 256 on a GPU, 8 windows "
                        "on a CPU; 0: a fresh rollout of --frames every iteration)")  # fmt: skip
    p.add_argument("--chunk", type=int, default=None, metavar="F",
                   help="streaming: frames generated (and backpropagated) per iteration (default half a window)")  # fmt: skip
    p.add_argument("--idle-fraction", type=float, default=None,
                   help="streaming: fraction of rollouts with no key held throughout (default 0.15; 0 with "
                        "--data: a recording has no frames for keys it did not hold)")  # fmt: skip
    p.add_argument("--idle-rollout-frames", type=int, default=None, metavar="N",
                   help="streaming: frames of an idle rollout before it restarts (default --rollout-frames): "
                        "longer trains the hold where a still view has drifted furthest")  # fmt: skip
    p.add_argument("--idle-dmd", type=float, default=1.0, metavar="W",
                   help="streaming: weight of the DMD term on idle rollouts (default 1); 0 leaves them to the "
                        "regression to the still view: the teacher's own still view drifts, and its score "
                        "pulls a held view along with it")  # fmt: skip
    p.add_argument("--separate-critic-rollouts", action="store_true",
                   help="streaming on a GPU: roll the critic's rows apart from the generator's (a CPU always "
                        "does); twice the rollout passes, 1 / (critic steps + 1) of the exit passes' memory")  # fmt: skip
    p.add_argument("--frames", type=int, default=None,
                   help="fresh rollouts (no streaming): rollout frames per iteration (default 1.5 x window)")  # fmt: skip
    p.add_argument("--context-frames", type=int, default=2, help="real frames the rollouts start from")
    p.add_argument("--context-noise", type=float, default=None,
                   help="noise level of the frames written to the cache, in training and in the exported "
                        "config (default: the teacher's)")  # fmt: skip
    p.add_argument(
        "--steps-per-frame", type=int, default=None, help="student sampling steps (default the config's)"
    )
    p.add_argument("--regression-weight", type=float, default=None,
                   help="weight of the MSE to the true latents on the same keys (the game's, or --data's "
                        "recorded frames); default 1.0 when streaming, else 0 (off)")  # fmt: skip
    p.add_argument("--regression-horizon", type=float, default=0.0, metavar="H",
                   help="streaming: weigh the regression of a frame generated d frames into a moving rollout by "
                        "exp(-d / H) (idle rollouts keep weight 1: their truth is the still view at any depth); "
                        "deep into a rollout the student's view has drifted from the true one and the MSE "
                        "pulls it to a blurred mean; 0 (default): weight 1 at every depth")  # fmt: skip
    p.add_argument("--stats-weight", type=float, default=0.0, metavar="W",
                   help="streaming: weight of the error of each generated frame's per-channel latent mean and "
                        "contrast to the true frame's, at every depth (a guard against slow drift that does "
                        "not blur; 0, the default: off)")  # fmt: skip
    p.add_argument("--hold-weight", type=float, default=0.0, metavar="W",
                   help="streaming, the built-in game: weight of the squared difference between a frame made "
                        "while no key is held and the frame before it, at every depth of every rollout (the "
                        "game's view does not change then); 0, the default: off")  # fmt: skip
    p.add_argument("--guidance", type=float, default=1.0, help="key guidance of the teacher score")
    p.add_argument("--t-min", type=float, default=0.02, help="lowest DMD / critic noise level")
    p.add_argument("--t-max", type=float, default=0.98, help="highest DMD / critic noise level")
    p.add_argument(
        "--context-max", type=float, default=0.1, help="diffusion-forced baseline: top context level"
    )
    p.add_argument("--ema-decay", type=float, default=0.99, help="EMA decay of the exported student")
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip")
    p.add_argument(
        "--export", default=None, metavar="FILE", help="after training, export the EMA student here"
    )
    add_store_arguments(p)
    # unset: the store when streaming (windows of hundreds of frames, drawn at every restart), live clips
    # for fresh rollouts (short clips: rendering them costs less than filling a store)
    p.set_defaults(source=None)


def add_idm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"), help="frame size")
    p.add_argument("--steps", type=int, default=3000, help="training batches (default 3000)")
    p.add_argument("--batch", type=int, default=64, help="games per batch (default 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="spawn and explorer seed")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--out", default=None, help="output .safetensors (default: the runs/idm cache)")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """`worldsim train export` (and `python -m worldsim.train.export`): a teacher train state -> a
    shipped checkpoint and its card."""
    p.add_argument("state", help="teacher.pt (or teacher.state.safetensors, the compact state) of a run")
    p.add_argument(
        "out",
        help="output .safetensors path, its card beside it as .md (with --int8: the 8-bit file; the bf16 "
        "one goes beside it as NAME-bf16.safetensors)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write the 8-bit file that ships (blocks' linears int8 per output channel) and its card",
    )
    p.add_argument(
        "--int8-group",
        type=int,
        default=None,
        metavar="G",
        help="with --int8: store the blocks' linears as int8 with one scale per G input columns (e.g. 32), "
        "read back as floats: per output channel moves a self-forced student's still view, per 32 keeps it",
    )
    p.add_argument(
        "--autoencoder-metrics", default=None, help="autoencoder.json from `worldsim train autoencoder`"
    )
    p.add_argument("--eval-json", default=None, help="a `worldsim eval` JSON to put in the card")
    p.add_argument(
        "--dtype", choices=["bf16", "fp32"], default="bf16", help="storage of matrices (default bf16)"
    )
    p.add_argument("--seeds", type=int, default=START_SEEDS, help="spawn seeds stored as start latents")
    p.add_argument("--context-noise", type=float, default=None, metavar="T",
                   help="the level finished frames enter the cache at, written into the file's config "
                        "(default: the run's, 0 for a teacher); a teacher trained on context up to 0.1 "
                        "plays better at 0.1")  # fmt: skip
    p.add_argument("--card-only", action="store_true", help="rewrite the card of an existing export")
