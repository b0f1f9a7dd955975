"""Serving: a ZeroMQ server that plays a batched World for many real-time and lockstep clients.

Protocol: docs/protocol.md (worldsim.serve.protocol). Clients: controllers/client.py.
"""

from worldsim.serve.protocol import PROTOCOL_VERSION, ProtocolError

__all__ = ["PROTOCOL_VERSION", "ProtocolError", "Server", "world_factory"]


def __getattr__(name: str):
    # Server and world_factory come with torch and zmq: loaded on first use, so that the protocol's
    # constants (worldsim.serve.protocol, read by `worldsim --help`'s verbs and by clients) do not
    if name == "Server":
        from worldsim.serve.server import Server

        return Server
    if name == "world_factory":
        from worldsim.worlds import world_factory

        return world_factory
    raise AttributeError(f"module 'worldsim.serve' has no attribute {name!r}")
