"""Serving: a ZeroMQ server that plays a batched World for many real-time and lockstep clients.

Protocol: docs/protocol.md (worldsim.serve.protocol). Clients: controllers/client.py.
"""

from worldsim.serve.protocol import PROTOCOL_VERSION, ProtocolError
from worldsim.serve.server import Server
from worldsim.worlds import world_factory

__all__ = ["PROTOCOL_VERSION", "ProtocolError", "Server", "world_factory"]
