"""Who may connect: loopback binds are open; anything else needs CURVE keys with an allow-list.

Key directory layout (made by `worldsim keys DIR`):
    DIR/server.key, DIR/server.key_secret      the server's key pair (give clients server.key)
    DIR/<name>.key, DIR/<name>.key_secret      a client's key pair (default name: client)
    DIR/authorized/<name>.key                  the allow-list: public keys the server accepts
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import stat
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from worldsim.errors import UserError

log = logging.getLogger(__name__)

AUTHORIZED = "authorized"


def check_endpoint(endpoint: str, flag: str, *, bind: bool) -> None:
    """A one-line UserError naming `flag` unless `endpoint` is a ZeroMQ tcp://, ipc:// or inproc:// address."""
    scheme, sep, rest = endpoint.partition("://")
    example = "tcp://127.0.0.1:5555" + (" (or tcp://0.0.0.0:5555 with --keys DIR)" if bind else "")
    usage = f"{flag} {endpoint!r} is not a ZeroMQ address: use tcp://HOST:PORT, e.g. {example}"
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise UserError(usage + (", or ipc://PATH" if bind else ""))
    if scheme != "tcp":
        if not rest:
            raise UserError(f"{flag} {endpoint!r} names no {scheme} path; e.g. {scheme}:///tmp/worldsim.sock")
        return
    host, colon, port = rest.rpartition(":")
    ok_port = port.isdigit() and int(port) <= 65535 and (bind or int(port) >= 1)
    if not colon or not host or not (ok_port or (bind and port == "*")):
        raise UserError(f"{usage}; the port must be {'0-65535 or *' if bind else '1-65535'}")


def is_local(endpoint: str) -> bool:
    """True for endpoints only this machine can reach: tcp on a loopback address, ipc, inproc."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: reachable from outside
        return False


def private_dir(d: Path) -> None:
    """Make `d` (and parents) and keep it 0700: what lies inside is for this user alone."""
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(d.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (%03o); tightened to 0700", d, mode)
        d.chmod(0o700)


def make_keys(directory: str | Path, client: str = "client") -> dict[str, Path]:
    """Create the server key pair (if missing) and a client key pair, and allow-list the client.

    The folder is 0700 and every secret key 0600; the secrets are written inside the 0700 folder
    first, so no other user can read them between their write and the chmod.
    """
    d = Path(directory)
    private_dir(d)
    private_dir(d / AUTHORIZED)
    made = {}
    if not (d / "server.key_secret").exists():
        zmq.auth.create_certificates(d, "server")
    (d / "server.key_secret").chmod(0o600)
    made["server_public"] = d / "server.key"
    if (d / f"{client}.key_secret").exists():
        raise UserError(f"{d / (client + '.key_secret')} exists; pick another client name with --client NAME")
    public, secret = zmq.auth.create_certificates(d, client)
    os.chmod(secret, 0o600)
    shutil.copy(public, d / AUTHORIZED / f"{client}.key")
    made["client_public"] = Path(public)
    made["client_secret"] = Path(secret)
    return made


def _load_pair(path: Path, role: str) -> tuple[bytes, bytes]:
    if not path.exists():
        raise UserError(f"{role} key {path} not found; make keys with `worldsim keys {path.parent}`")
    public, secret = zmq.auth.load_certificate(path)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("%s is readable by other users; chmod 600 it (anyone who reads it can be %s)", path, role)
    if secret is None:
        raise UserError(f"{path} holds no secret key; pass the *.key_secret file's directory")
    return public, secret


class CurveServer:
    """Turns a server socket into a CURVE server that accepts only the allow-listed client keys."""

    def __init__(self, ctx: zmq.Context, keys_dir: str | Path) -> None:
        d = Path(keys_dir)
        self.public, self.secret = _load_pair(d / "server.key_secret", "server")
        allowed = d / AUTHORIZED
        if not allowed.is_dir() or not any(allowed.glob("*.key")):
            raise UserError(f"no client keys in {allowed}; add one with `worldsim keys {d} --client NAME`")
        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("worldsim.serve.auth"))
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(allowed))
        log.info("CURVE on: %d allowed client key(s) in %s", len(list(allowed.glob("*.key"))), allowed)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        self.auth.stop()


def check_bind(endpoint: str, keys_dir: str | Path | None, insecure: bool) -> None:
    """Refuse a bind other machines can reach unless it has keys or the user said --insecure."""
    check_endpoint(endpoint, "--bind", bind=True)
    if is_local(endpoint) or keys_dir is not None:
        return
    if insecure:
        log.warning("serving %s without encryption or authentication (--insecure)", endpoint)
        return
    raise UserError(
        f"bind {endpoint!r} is reachable from other machines; pass --keys DIR (make them with "
        "`worldsim keys DIR`) to require allow-listed clients, or --insecure to serve anyone"
    )
