"""Client-side CURVE key loading (pure pyzmq; vendored into the add-on with the rest of ``shared``).

The key folder is the one ``headrig keys add-client NAME --keys DIR`` writes for an artist (see
``backend/service/security.py``): ``server.key`` (the server's public key, safe to hand out),
``client.key_secret`` (this artist's key pair); never the server's secret. The add-on cannot import ``backend``, so this loader lives here and the backend reuses it.
"""

from __future__ import annotations

from pathlib import Path


class CurveKeyError(ValueError):
    """A key folder that lacks a file or holds an unreadable certificate."""


def load_client_keys(keys_dir: str | Path) -> tuple[bytes, bytes, bytes]:
    """``(client_public, client_secret, server_public)`` as Z85 bytes, ready for ``zmq`` socket options."""
    import zmq.auth  # lazily: the add-on imports shared/ in Blender where pyzmq may load late

    keys_dir = Path(keys_dir)
    client_file, server_file = keys_dir / "client.key_secret", keys_dir / "server.key"
    for path in (client_file, server_file):
        if not path.is_file():
            raise CurveKeyError(f"{path}: missing; use the folder the server's owner made for you with "
                                "`headrig keys add-client NAME --keys DIR` (DIR/clients/NAME)")
    try:
        client_public, client_secret = zmq.auth.load_certificate(client_file)
        server_public, _ = zmq.auth.load_certificate(server_file)
    except (ValueError, OSError) as exc:
        raise CurveKeyError(f"{keys_dir}: unreadable CURVE certificate ({exc})") from None
    if not client_secret:
        raise CurveKeyError(f"{client_file}: holds no secret key")
    return client_public, client_secret, server_public


def apply_client_keys(socket, keys_dir: str | Path) -> None:
    """Make ``socket`` a CURVE client of the server whose keys are in ``keys_dir`` (before connect)."""
    client_public, client_secret, server_public = load_client_keys(keys_dir)
    socket.curve_publickey = client_public
    socket.curve_secretkey = client_secret
    socket.curve_serverkey = server_public
