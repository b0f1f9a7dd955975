"""The engine: GraphWorld's one-graph step equals NeuralWorld's eager step, slots join and leave freely."""

import pytest
import torch
from models import assert_frames_close

from worldsim.checkpoint import save_checkpoint
from worldsim.engine.latent import LatentEngine
from worldsim.graph_world import GraphWorld
from worldsim.model import DiT, get_preset
from worldsim.model.autoencoder import Autoencoder
from worldsim.model.presets_anchor import anchor_preset
from worldsim.neural import NeuralWorld
from worldsim.worlds import fastest_world

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def _checkpoint(tmp_path, **changes):
    cfg = get_preset("test").replace(**changes)
    torch.manual_seed(0)
    dit, ae = DiT(cfg), Autoencoder(cfg.autoencoder)
    with torch.no_grad():  # non-trivial weights: adaLN-Zero init would make every frame the same
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    start = torch.randn(3, 2, cfg.latent_channels, *cfg.latent_hw)
    return save_checkpoint(
        tmp_path / "t.safetensors", config=cfg, dit=dit.state_dict(), autoencoder=ae.state_dict(),
        start_latents=start,
    )  # fmt: skip


def _session_script(a, b, num_keys: int, atol: int, partial: bool = True) -> None:
    """Drive two worlds through the same joins, leaves and partial steps; frames must agree."""
    gen = torch.Generator().manual_seed(1)

    def keys(n):
        return torch.rand(n, num_keys, generator=gen) < 0.4

    def same(x, y):
        assert_frames_close(x, y, levels=atol)  # rounding, never drift

    same(a.reset([0, 1, 2]), b.reset([0, 1, 2]))
    for _ in range(6):  # past the 4-frame window: filling and wrapped cache in the same graph
        k = keys(3)
        same(a.step(k), b.step(k))
    if not partial:
        return
    k = keys(1)
    same(a.step(k, slots=[1]), b.step(k, slots=[1]))  # one session steps alone
    same(a.reset([7], slots=[2]), b.reset([7], slots=[2]))  # a session leaves, another joins
    for _ in range(3):
        k = keys(2)
        same(a.step(k, slots=[2, 0]), b.step(k, slots=[2, 0]))
    k = keys(3)
    same(a.step(k), b.step(k))
    assert torch.equal(a.cache.length.cpu(), b.world.cache.length.cpu())


@pytest.mark.parametrize("changes", [{}, {"context_noise": 0.1}, {"context_noise": 0.1, "prev_frame": True}])
def test_engine_step_equals_neural_world_eager(tmp_path, changes):
    path = _checkpoint(tmp_path, **changes)
    eager = NeuralWorld.from_checkpoint(path, device="cpu", batch_size=3)
    engine = GraphWorld.from_checkpoint(path, device="cpu", batch_size=3, graph=False)
    assert not engine.graph.enabled  # off CUDA the engine runs its step function eagerly
    # slot steps run sub-batches in eager, the full batch in the engine: one level of rounding slack
    _session_script(eager, engine, eager.num_keys, atol=1)


def test_engine_with_guidance_and_describe(tmp_path):
    path = _checkpoint(tmp_path)
    eager = NeuralWorld.from_checkpoint(path, device="cpu", batch_size=2, guidance=2.0)
    engine = fastest_world(path, device="cpu", batch_size=2, guidance=2.0, dtype=torch.float32)
    eager.reset([0, 1]), engine.reset([0, 1])
    k = torch.tensor([[1, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(eager.step(k), engine.step(k))
    d = engine.describe()
    assert d["world"] == "NeuralWorld" and d["engine"] == "eager" and d["checkpoint"] == "t"
    assert isinstance(engine, NeuralWorld)  # on a CPU the factory gives the eager world itself, no graph
    with pytest.raises(ValueError, match="GraphWorld needs a CUDA world"):
        GraphWorld(eager)


def test_inactive_rows_do_not_advance(tmp_path):
    engine = GraphWorld.from_checkpoint(_checkpoint(tmp_path), device="cpu", batch_size=3, graph=False)
    engine.reset([0, 1, 2])
    before = engine.world.cache.length.clone()
    engine.step(torch.zeros(1, engine.num_keys, dtype=torch.bool), slots=[2])
    assert engine.world.cache.length.tolist() == [before[0].item(), before[1].item(), before[2].item() + 1]


def test_latent_engine_multi_frame_blocks():
    cfg = anchor_preset("matrix-game-2", quick=True)
    assert cfg.block_frames == 3 and cfg.tokens_per_frame == 8 and cfg.window == 6
    torch.manual_seed(0)
    eng = LatentEngine(DiT(cfg), batch_size=2, device="cpu", dtype=torch.float32)
    keys = torch.zeros(2, 3, cfg.num_keys, dtype=torch.bool)
    outs = [eng.step(keys).clone() for _ in range(4)]
    assert outs[0].shape == (2, 3, cfg.latent_channels, *cfg.latent_hw)
    assert eng.cache.length.tolist() == [12, 12]
    assert all(torch.isfinite(o).all() for o in outs)


@cuda
@pytest.mark.parametrize("prev_frame", [False, True], ids=["plain", "stacked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_replay_equals_eager(tmp_path, dtype, prev_frame):
    torch.backends.cuda.matmul.allow_tf32 = False
    path = _checkpoint(tmp_path, context_noise=0.05, prev_frame=prev_frame)
    eager = NeuralWorld.from_checkpoint(path, device="cuda", batch_size=3, dtype=dtype)
    engine = GraphWorld.from_checkpoint(path, device="cuda", batch_size=3, dtype=dtype)
    assert engine.graph.enabled
    # eager slot steps run sub-batches, whose kernels may round differently from the graph's full batch:
    # one level of slack, and the slot script only in fp32 (bf16 rounding would compound over frames)
    _session_script(eager, engine, eager.num_keys, atol=1, partial=dtype == torch.float32)
    graph = engine.graph.graph
    engine.reset([3], slots=[0])
    engine.step(torch.zeros(3, engine.num_keys, dtype=torch.bool))
    assert engine.graph.graph is graph  # joins and leaves never recapture


@cuda
def test_cuda_latent_engine_graph_equals_eager():
    cfg = anchor_preset("self-forcing", quick=True)
    torch.manual_seed(0)
    dit = DiT(cfg)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    a = LatentEngine(dit, batch_size=2, device="cuda", dtype=torch.float32)
    b = LatentEngine(dit, batch_size=2, device="cuda", dtype=torch.float32, graph=True)  # shared weights
    keys = torch.zeros(2, 3, cfg.num_keys, dtype=torch.bool, device="cuda")
    for _ in range(4):
        torch.testing.assert_close(a.step(keys), b.step(keys), atol=1e-3, rtol=1e-3)


def test_the_cpu_engine_runs_bf16_only_where_it_was_timed_faster(tmp_path, monkeypatch):
    """fastest_world on a CPU takes bf16 when this CPU's bf16 matmuls win (timed once per process), and
    WORLDSIM_CPU_DTYPE overrides the timing; an explicit dtype always wins."""
    from worldsim.engine import dtype as engine_world

    path = _checkpoint(tmp_path)
    for forced, want in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        monkeypatch.setenv(engine_world.CPU_DTYPE_ENV, forced)
        engine_world.cpu_prefers_bf16.cache_clear()
        w = fastest_world(path, device="cpu")
        assert w.dtype == want and w.cache.k[0].dtype == want
        w.reset([0])
        frame = w.step(torch.zeros(1, w.num_keys, dtype=torch.bool))
        assert frame.dtype == torch.uint8 and frame.shape == (1, *w.cfg.image_hw, 3)
    assert fastest_world(path, device="cpu", dtype=torch.bfloat16).dtype == torch.bfloat16
    monkeypatch.setenv(engine_world.CPU_DTYPE_ENV, "fp16")
    engine_world.cpu_prefers_bf16.cache_clear()
    with pytest.raises(ValueError, match="WORLDSIM_CPU_DTYPE='fp16': use fp32 or bf16"):
        fastest_world(path, device="cpu")
    monkeypatch.delenv(engine_world.CPU_DTYPE_ENV)
    engine_world.cpu_prefers_bf16.cache_clear()
    assert isinstance(engine_world.cpu_prefers_bf16(), bool)  # the timed answer, whatever this CPU says
    engine_world.cpu_prefers_bf16.cache_clear()


def test_the_bf16_timing_runs_on_one_thread_and_leaves_the_threads_as_set(monkeypatch):
    """The CPU's bf16 question is timed on one thread (under a passive OpenMP wait two threads' wake-ups
    hid bf16's gain and the window played fp32), and the process's thread count is left as it was."""
    from worldsim.engine import dtype as engine_world

    seen, linear = [], torch.nn.functional.linear

    def counted(*a, **k):
        seen.append(torch.get_num_threads())
        return linear(*a, **k)

    before = torch.get_num_threads()
    monkeypatch.delenv(engine_world.CPU_DTYPE_ENV, raising=False)
    monkeypatch.setattr(torch.nn.functional, "linear", counted)
    torch.set_num_threads(2)
    engine_world.cpu_prefers_bf16.cache_clear()
    try:
        engine_world.cpu_prefers_bf16()
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        engine_world.cpu_prefers_bf16.cache_clear()
        torch.set_num_threads(before)
