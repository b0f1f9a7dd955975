"""Export: an mp4 that ffmpeg reads back frame for frame, a gif that Pillow reads back, crisp upscaling."""

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from worldsim.cli import main as cli_main
from worldsim.record import RecordingWriter
from worldsim.record.export import export_recording


def _recording(path, n=12, h=16, w=20):
    rng = np.random.default_rng(0)
    # Flat colour blocks (8x8 cells) so lossy mp4 colours stay close to the source.
    frames = np.repeat(np.repeat(rng.integers(0, 256, (n, h // 4, w // 4, 3), dtype=np.uint8), 4, 1), 4, 2)
    with RecordingWriter(path, world="game", height=h, width=w, key_names=["a", "b"], fps=10, seed=0) as wr:
        for i in range(n):
            wr.write(i, [i % 2, 0], frames[i])
    return frames


def test_export_mp4_reads_back(tmp_path):
    src, out = tmp_path / "a.wsrec", tmp_path / "a.mp4"
    frames = _recording(src)
    assert cli_main(["export", str(src), str(out), "--scale", "3"]) == 0
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = reader.__next__()
    assert tuple(meta["size"]) == (60, 48) and meta["fps"] == pytest.approx(10)
    got = [np.frombuffer(b, np.uint8).reshape(48, 60, 3) for b in reader]
    assert len(got) == len(frames)
    # Nearest-neighbour x3, then H.264: the first frame's centre of each cell is close to the source.
    cell = got[0][6::12, 6::12].astype(int)
    assert np.abs(cell - frames[0][2::4, 2::4].astype(int)).mean() < 20


def test_export_gif_reads_back_and_odd_sizes_pad(tmp_path):
    src = tmp_path / "a.wsrec"
    frames = _recording(src, n=5)
    out = tmp_path / "a.gif"
    assert export_recording(src, out, scale=2, fps=20) == 5
    with Image.open(out) as im:
        assert im.size == (40, 32) and im.n_frames == 5 and im.info["duration"] == 50
        im.seek(3)
        rgb = np.asarray(im.convert("RGB"))
    assert np.abs(rgb[::2, ::2].astype(int) - frames[3].astype(int)).mean() < 8  # gif palette quantization
    # Odd sides: yuv420p needs even, the exporter pads by one edge row/column instead of failing.
    odd = tmp_path / "odd.wsrec"
    with RecordingWriter(odd, world="game", height=7, width=9, key_names=["a"], fps=5, seed=0) as wr:
        for i in range(3):
            wr.write(i, [0], np.full((7, 9, 3), 40 * i, np.uint8))
    assert export_recording(odd, tmp_path / "odd.mp4", scale=1) == 3
    assert sum(1 for _ in imageio_ffmpeg.read_frames(str(tmp_path / "odd.mp4"))) == 1 + 3
