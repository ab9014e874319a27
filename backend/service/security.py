"""CURVE keys and the listen policy of ``headrig serve``.

Ironhouse pattern: the server has a key pair, every client has one, and the server only lets in the
client public keys copied into ``authorized_clients/`` (ZAP via pyzmq's ``ThreadAuthenticator``).
Without keys the server speaks plaintext and must stay on loopback: anyone who can reach the port
could otherwise submit jobs and read results.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

from shared.curve_keys import CurveKeyError, load_client_keys

KEY_FILES = ("server.key_secret", "server.key", "client.key_secret", "client.key")
AUTHORIZED = "authorized_clients"


class SecurityError(ValueError):
    """A refused configuration (public bind without keys, missing or existing key files)."""


def generate_keys(keys_dir: str | Path) -> Path:
    """Write a server and a client key pair and authorise the client; refuses to overwrite keys."""
    import zmq.auth

    keys_dir = Path(keys_dir)
    existing = [name for name in KEY_FILES if (keys_dir / name).exists()]
    if existing or (keys_dir / AUTHORIZED / "client.key").exists():
        raise SecurityError(f"{keys_dir}: already holds keys ({', '.join(existing) or AUTHORIZED}); "
                            "refusing to overwrite them, choose another folder")
    keys_dir.mkdir(parents=True, exist_ok=True)
    (keys_dir / AUTHORIZED).mkdir(exist_ok=True)
    # create_certificates writes the secret file with the default umask first; tighten the umask
    # so that no other user can read it even for that moment.
    old_umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(keys_dir, "server")
        zmq.auth.create_certificates(keys_dir, "client")
    finally:
        os.umask(old_umask)
    for name in ("server.key_secret", "client.key_secret"):
        os.chmod(keys_dir / name, 0o600)
    for name in ("server.key", "client.key"):
        os.chmod(keys_dir / name, 0o644)
    shutil.copyfile(keys_dir / "client.key", keys_dir / AUTHORIZED / "client.key")
    return keys_dir


def load_server_keys(keys_dir: str | Path) -> tuple[bytes, bytes]:
    """``(server_public, server_secret)``; checks that the allow-list folder exists."""
    import zmq.auth

    keys_dir = Path(keys_dir)
    secret_file = keys_dir / "server.key_secret"
    if not secret_file.is_file():
        raise SecurityError(f"{secret_file}: missing; run `headrig keys generate {keys_dir}`")
    if not (keys_dir / AUTHORIZED).is_dir():
        raise SecurityError(f"{keys_dir / AUTHORIZED}: missing; it lists the client public keys allowed in")
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (ValueError, OSError) as exc:
        raise SecurityError(f"{secret_file}: unreadable CURVE certificate ({exc})") from None
    if not secret:
        raise SecurityError(f"{secret_file}: holds no secret key")
    return public, secret


def start_authenticator(context, keys_dir: str | Path):
    """Start ZAP for ``context``: only public keys in ``keys_dir/authorized_clients`` get in."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(context)
    auth.start()
    # The folder is read once here; restart the server after adding a client key.
    auth.configure_curve(domain="*", location=str(Path(keys_dir) / AUTHORIZED))
    return auth


def apply_server_keys(socket, keys_dir: str | Path) -> None:
    """Make ``socket`` a CURVE server (before bind)."""
    public, secret = load_server_keys(keys_dir)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True


def client_curve_options(keys_dir: str | Path) -> dict[str, bytes]:
    """Socket options for a CURVE client: ``{name: value}`` for ``setattr(socket, name, value)``."""
    try:
        client_public, client_secret, server_public = load_client_keys(keys_dir)
    except CurveKeyError as exc:
        raise SecurityError(str(exc)) from None
    return {"curve_publickey": client_public, "curve_secretkey": client_secret, "curve_serverkey": server_public}


def _is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", "lo", "lo0"):  # "lo": zmq also binds interface names
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_allowed(bind: str, keys_dir: str | Path | None) -> None:
    """Refuse a plaintext bind that other machines could reach (anything but loopback or ipc)."""
    scheme, sep, rest = bind.partition("://")
    if not sep:
        raise SecurityError(f"{bind!r}: not a ZeroMQ endpoint; use e.g. tcp://127.0.0.1:5555")
    if keys_dir is not None or scheme in ("ipc", "inproc"):
        return
    if scheme != "tcp":
        raise SecurityError(f"refusing to listen on {bind} without CURVE keys; run `headrig keys generate DIR` and pass --keys DIR")
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    if not _is_loopback_host(host):
        raise SecurityError(f"refusing to listen on {rest} without CURVE keys; "
                            "run `headrig keys generate DIR` and pass --keys DIR")
