"""`worldsim replay | export | verify`: look at, convert and check `.wsrec` session recordings."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="play a .wsrec recording in a window, or print its summary with --headless",
        description="Play a recording at its recorded fps (space pauses, Esc quits), or print a summary.",
    )
    p.add_argument("file", help="a .wsrec recording")
    p.add_argument(
        "--headless", action="store_true", help="no window: print world, frames, key usage, latency"
    )
    p.add_argument("--scale", type=int, default=None, help="integer upscale of the window (default: ~512 px)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed factor (default 1)")
    p.set_defaults(func=run_replay)

    p = sub.add_parser(
        "export",
        help="write a .wsrec recording as an mp4 or gif",
        description="Export a recording to OUT.mp4 (ffmpeg bundled with imageio-ffmpeg) or OUT.gif (Pillow).",
    )
    p.add_argument("file", help="a .wsrec recording")
    p.add_argument("out", help="output path ending in .mp4 or .gif")
    p.add_argument("--scale", type=int, default=None, help="nearest-neighbour upscale (default: >= 256 px)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the recorded fps)")
    p.set_defaults(func=run_export)

    p = sub.add_parser(
        "verify",
        help="re-run the real game (or a recorded gym:ID env) from a recording's seed and keys and compare "
        "every frame",
        description="Exit 0 and print 'identical' when every frame matches; exit 1 at the first mismatch.",
    )
    p.add_argument("file", help="a .wsrec recording of the real game or of a gym:ID world")
    p.add_argument(
        "--device",
        default=None,
        help="device to re-run the game on (default: the recorded extra.device, else cpu)",
    )
    p.set_defaults(func=run_verify)


def _positive_scale(scale: int | None) -> None:
    from worldsim.errors import UserError

    if scale is not None and not 1 <= scale <= 64:
        raise UserError(f"--scale must be an int in 1..64, got {scale}")


def run_replay(args: argparse.Namespace) -> int:
    _positive_scale(args.scale)
    if args.headless:
        from worldsim.record.summary import format_summary, summarize

        print(format_summary(summarize(args.file)))
        return 0
    from worldsim.errors import UserError
    from worldsim.record.replay import replay_window

    if not args.speed > 0:
        raise UserError(f"--speed must be > 0, got {args.speed}")
    replay_window(args.file, scale=args.scale, speed=args.speed)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from worldsim.record.export import export_recording

    n = export_recording(args.file, args.out, scale=args.scale, fps=args.fps)
    print(f"wrote {args.out} ({n} frames)")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from worldsim.record.verify import verify_recording

    result = verify_recording(args.file, device=args.device)
    if result.identical:
        note = " (file truncated: checked every complete record)" if result.truncated else ""
        if result.records_skipped:
            note += (
                f" ({result.records_skipped} damaged record(s) skipped; {result.frames_unchecked} frame(s) "
                "after them, up to the next reset, could not be re-run)"
            )
        print(f"identical: {result.frames_checked} frames match the game{note}")
        return 0
    print(
        f"mismatch at record {result.mismatch_index} (frame {result.mismatch_frame_number}): "
        f"{result.differing_pixels} pixels differ, max abs diff {result.max_abs_diff}; "
        f"{result.frames_checked} frames matched before it"
    )
    return 1
