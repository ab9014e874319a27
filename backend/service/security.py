"""CURVE keys and the listen policy of ``headrig serve``.

Ironhouse pattern: the server has a key pair, every artist has one, and the server only lets in the
client public keys in ``authorized_clients/`` (ZAP via pyzmq's ``ThreadAuthenticator``). Layout of the
server's key folder: ``server.key_secret`` (stays there), ``server.key``, ``authorized_clients/<name>.key``,
``admins/<name>.key`` and ``clients/<name>/`` (what ``add_client`` made for an artist to copy: their own
pair and the server's public key, never the server's secret). The authenticated key owns the jobs.
Without keys the server speaks plaintext and must stay on loopback: anyone who can reach the port
could otherwise submit jobs and read results.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from pathlib import Path

from shared.curve_keys import CurveKeyError, load_client_keys

SERVER_FILES = ("server.key_secret", "server.key")
CLIENT_FILES = ("client.key_secret", "client.key", "server.key")   # an artist's folder: their pair + the server's public key
AUTHORIZED = "authorized_clients"   # <NAME>.key: public keys let in (ZAP reads this folder)
ADMINS = "admins"                   # <NAME>.key: public keys that see every artist's jobs
CLIENTS = "clients"                 # <NAME>/: the folder handed to that artist (never the server's secret)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SecurityError(ValueError):
    """A refused configuration (public bind without keys, missing or existing key files)."""


def generate_keys(keys_dir: str | Path) -> Path:
    """Write the server's key pair and the empty ``authorized_clients/`` and ``admins/`` folders;
    refuses to overwrite keys. Artists get keys from ``add_client``."""
    keys_dir = Path(keys_dir)
    existing = [name for name in SERVER_FILES if (keys_dir / name).exists()]
    if existing:
        raise SecurityError(f"{keys_dir}: already holds keys ({', '.join(existing)}); "
                            "refusing to overwrite them, choose another folder")
    keys_dir.mkdir(parents=True, exist_ok=True)
    for sub in (AUTHORIZED, ADMINS, CLIENTS):
        (keys_dir / sub).mkdir(exist_ok=True)
    _create_pair(keys_dir, "server")
    return keys_dir


def add_client(keys_dir: str | Path, name: str, admin: bool = False) -> Path:
    """A key pair for artist ``name``: ``clients/<name>/`` (their secret key and the server's public key,
    the folder to hand over) and ``authorized_clients/<name>.key`` (and ``admins/<name>.key``)."""
    keys_dir = Path(keys_dir)
    _check_name(name)
    load_server_keys(keys_dir)
    folder, public = keys_dir / CLIENTS / name, keys_dir / AUTHORIZED / f"{name}.key"
    if folder.exists() or public.exists():
        raise SecurityError(f"{keys_dir}: client {name!r} exists already; revoke it first "
                            f"(`headrig keys revoke-client {name} --keys {keys_dir}`) or choose another name")
    (keys_dir / CLIENTS).mkdir(exist_ok=True)
    (keys_dir / ADMINS).mkdir(exist_ok=True)
    tmp = keys_dir / CLIENTS / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _create_pair(tmp, "client")
    shutil.copyfile(keys_dir / "server.key", tmp / "server.key")
    os.rename(tmp, folder)
    if admin:
        shutil.copyfile(folder / "client.key", keys_dir / ADMINS / f"{name}.key")
    shutil.copyfile(folder / "client.key", public)  # last: the key works once everything is in place
    return folder


def revoke_client(keys_dir: str | Path, name: str) -> None:
    """Remove ``name``'s public key from ``authorized_clients/`` and ``admins/`` (a running server stops
    letting it in within seconds) and delete the key files ``add_client`` wrote for it."""
    keys_dir = Path(keys_dir)
    _check_name(name)
    public = keys_dir / AUTHORIZED / f"{name}.key"
    if not public.is_file():
        known = sorted(p.stem for p in (keys_dir / AUTHORIZED).glob("*.key"))
        raise SecurityError(f"{keys_dir}: no client {name!r}; clients: {', '.join(known) or 'none'}")
    public.unlink()
    (keys_dir / ADMINS / f"{name}.key").unlink(missing_ok=True)
    folder = keys_dir / CLIENTS / name
    for file in CLIENT_FILES:  # only the files we wrote; anything else the owner put there stays
        (folder / file).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SecurityError(f"client name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")


def _create_pair(folder: Path, stem: str) -> None:
    import zmq.auth

    # create_certificates writes the secret file with the default umask first; tighten the umask
    # so that no other user can read it even for that moment.
    old_umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(folder, stem)
    finally:
        os.umask(old_umask)
    os.chmod(folder / f"{stem}.key_secret", 0o600)
    os.chmod(folder / f"{stem}.key", 0o644)


class KeyRing:
    """Who may connect to a CURVE server and who is an admin, as ZAP user ids ("curve:" + Z85 public
    key, the job owner ids); ``refresh`` re-reads the folders when they change (add or revoke a client
    while the server runs)."""

    def __init__(self, keys_dir: str | Path):
        self.keys_dir = Path(keys_dir)
        self.clients: dict[str, str] = {}   # user id -> name
        self.admins: set[str] = set()
        self._stamp = None

    def refresh(self) -> bool:
        """Re-read if anything changed; True when it did."""
        files = sorted([*(self.keys_dir / AUTHORIZED).glob("*.key"), *(self.keys_dir / ADMINS).glob("*.key")])
        stamp = [(str(f), f.stat().st_mtime_ns) for f in files if f.exists()]
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self.clients = _read_public_keys(self.keys_dir / AUTHORIZED)
        self.admins = set(_read_public_keys(self.keys_dir / ADMINS)) & set(self.clients)
        return True


def user_id(public_key_z85: bytes | str) -> str:
    """The job owner id of a CURVE client: what ZAP reports as its User-Id, prefixed."""
    return "curve:" + (public_key_z85.decode() if isinstance(public_key_z85, bytes) else public_key_z85)


def _read_public_keys(folder: Path) -> dict[str, str]:
    import zmq.auth

    out = {}
    for file in sorted(folder.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(file)
        except (ValueError, OSError):
            continue  # ZAP skips it too: that key is simply not let in
        out[user_id(public)] = file.stem
    return out


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
