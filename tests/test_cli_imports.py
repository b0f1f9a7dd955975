"""What starting worldsim loads: `worldsim --help` (building the parser) loads no torch, and neither
`import worldsim` nor the serve path loads pygame or matplotlib (a headless server need not have them).
Each check runs in a fresh interpreter: this test process has imported everything already."""

import subprocess
import sys

import pytest


def modules_after(code: str) -> set[str]:
    """The top-level package names in sys.modules after running `code` in a fresh interpreter."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_building_the_parser_loads_no_torch():
    loaded = modules_after("import worldsim.cli as c\nc.build_parser()")
    assert "worldsim" in loaded and "argparse" in loaded  # the check would see a loaded module
    assert not loaded & {"torch", "zmq", "pygame", "matplotlib", "gymnasium"}


def test_help_of_every_verb_loads_no_torch():
    code = (
        "import contextlib, io, worldsim.cli as c\n"
        "p = c.build_parser()\n"
        "for argv in (['--help'], ['train', 'export', '--help'], ['bench', 'neural', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        p.parse_args(argv)\n"
    )
    assert "torch" not in modules_after(code)


def test_import_worldsim_loads_neither_pygame_nor_matplotlib():
    loaded = modules_after("import worldsim")
    assert not loaded & {"pygame", "matplotlib", "torch"}


@pytest.mark.parametrize("world", ["game", "neural"])
def test_the_serve_path_loads_neither_pygame_nor_matplotlib(world):
    """The world a server would play, built and stepped, and the server itself bound on loopback."""
    code = (
        "import torch\n"
        "from worldsim.serve import Server, world_factory\n"
        f"make = world_factory({world!r}, checkpoint='tiny' if {world!r} == 'neural' else None, device='cpu')\n"
        "w = make(1)\n"
        "w.reset([0])\n"
        "w.step(torch.zeros(1, w.num_keys, dtype=torch.bool))\n"
        "s = Server(make, bind='tcp://127.0.0.1:0', max_sessions=1).start()\n"
        "s.stop()\n"
    )
    loaded = modules_after(code)
    assert {"torch", "zmq"} <= loaded  # it did build the world and the server
    assert not loaded & {"pygame", "matplotlib"}


def test_gymnasium_ids_register_whichever_is_imported_first():
    for code in ("import worldsim\nimport gymnasium as gym", "import gymnasium as gym\nimport worldsim"):
        out = subprocess.run(
            [sys.executable, "-c", f"{code}\nprint('worldsim/Maze-v0' in gym.registry)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.stdout.strip() == "True", (code, out.stderr)


def test_a_command_that_computes_alone_gets_the_spin_wait_and_the_others_keep_passive():
    """OpenMP's wait (set before torch loads): active for eval, the neural and game benches and headless
    play without a server; the passive default for serve, the window, a server or client, and training;
    never over a policy the user set, never once torch is loaded."""
    import worldsim
    from worldsim.cli import build_parser, wait_policy

    p = build_parser()
    alone = [
        ["eval", "--quick"],
        ["bench", "neural"],
        ["bench", "game"],
        ["play", "--headless", "--frames", "5"],
    ]
    shared = [["serve"], ["play"], ["play", "--headless", "--frames", "5", "--server"], ["bench", "serve"],
              ["play", "--connect", "tcp://127.0.0.1:5555"], ["train", "teacher", "--out", "x"]]  # fmt: skip
    ours = worldsim.OMP_POLICY_OURS
    try:
        worldsim.OMP_POLICY_OURS = True
        for argv in alone + shared:
            env = {"OMP_WAIT_POLICY": "PASSIVE"}
            got = wait_policy(p.parse_args(argv), environ=env, modules={})
            want = "ACTIVE" if argv in alone else None
            assert got == want and env["OMP_WAIT_POLICY"] == (want or "PASSIVE"), argv
        env = {"OMP_WAIT_POLICY": "PASSIVE"}
        assert wait_policy(p.parse_args(["eval"]), environ=env, modules={"torch": None}) is None  # too late
        worldsim.OMP_POLICY_OURS = False  # the user's own policy stays
        assert wait_policy(p.parse_args(["eval"]), environ=env, modules={}) is None
        assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    finally:
        worldsim.OMP_POLICY_OURS = ours
