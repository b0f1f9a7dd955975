"""`worldsim bench --serve` runs end to end and writes the JSON shape the issue asks for (no timing asserts)."""

import json

from worldsim.cli import main


def test_serve_bench_writes_per_client_json(tmp_path, capsys):
    out = tmp_path / "serve.json"
    argv = [
        "bench",
        "--serve",
        "--world",
        "game",
        "--size",
        "16",
        "--clients",
        "2",
        "--seconds",
        "1",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    assert len(r["clients"]) == 2 and r["world"] == "game" and r["size"] == [16, 16]
    for c in r["clients"]:
        assert c["fps"] > 0 and c["frames"] > 0 and c["dropped"] >= 0
        assert set(c["latency_ms"]) >= {"p50", "p99"}
    assert len(r["server_sessions"]) == 2 and r["server"]["bad_messages"] == 0
    assert "p99 ms" in capsys.readouterr().out
