"""Export a recording to mp4 (imageio-ffmpeg's bundled ffmpeg) or gif (Pillow), nearest-neighbour upscaled."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from worldsim.errors import UserError
from worldsim.record.reader import RecordingReader

log = logging.getLogger(__name__)


def auto_scale(height: int, width: int, target: int = 256) -> int:
    """The integer upscale that brings the larger side to at least `target` pixels (1 if already there)."""
    return max(1, -(-target // max(height, width)))


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of [H, W, 3] by an integer factor: crisp pixels, no blur."""
    if scale == 1:
        return frame
    return frame.repeat(scale, axis=0).repeat(scale, axis=1)


def export_recording(
    src: str | Path, out: str | Path, *, scale: int | None = None, fps: float | None = None
) -> int:
    """Write `src` as `out` (.mp4 or .gif); returns the number of frames written."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise UserError(f"output '{out}' must end in .mp4 or .gif (got '{suffix or 'no suffix'}')")
    if scale is not None and not 1 <= scale <= 64:
        raise UserError(f"--scale must be an int in 1..64, got {scale}")
    if fps is not None and not 0 < fps <= 1000:
        raise UserError(f"--fps must be in (0, 1000], got {fps}")
    reader = RecordingReader(src)
    h, w = reader.header["height"], reader.header["width"]
    scale = scale or auto_scale(h, w)
    fps = fps or reader.header["fps"]
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        n = _write_gif(reader, out, scale, fps)
    else:
        n = _write_mp4(reader, out, scale, fps)
    if n == 0:
        out.unlink(missing_ok=True)
        raise UserError(f"{src}: the recording has no frames to export")
    log.info("wrote %s: %d frames, %dx%d at %.3g fps", out, n, w * scale, h * scale, fps)
    return n


def _write_mp4(reader: RecordingReader, out: Path, scale: int, fps: float) -> int:
    import imageio_ffmpeg

    h, w = reader.header["height"] * scale, reader.header["width"] * scale
    # yuv420p (what every player reads) needs even sides: pad one edge row/column when odd.
    pad_h, pad_w = h % 2, w % 2
    writer = imageio_ffmpeg.write_frames(
        str(out),
        (w + pad_w, h + pad_h),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        output_params=["-crf", "18"],
    )
    writer.send(None)  # start ffmpeg
    n = 0
    try:
        for rec in reader:
            frame = upscale(rec.frame, scale)
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            writer.send(np.ascontiguousarray(frame))
            n += 1
    finally:
        writer.close()
    return n


def _write_gif(reader: RecordingReader, out: Path, scale: int, fps: float) -> int:
    from PIL import Image

    images = [Image.fromarray(upscale(rec.frame, scale)) for rec in reader]
    if images:
        # GIF stores delays in 1/100 s: the nearest representable rate to `fps`.
        duration_ms = max(10, round(100 / fps) * 10)
        tmp = out.with_name(out.name + ".tmp")
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0
        )
        tmp.replace(out)
    return len(images)
