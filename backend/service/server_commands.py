"""CLI commands of the service: ``headrig serve`` and ``headrig keys generate|add-client|revoke-client``.

Errors a user can fix (a public bind without keys, missing or existing key files, a bad folder)
are one line on stderr and exit code 2, like the rest of ``headrig``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def cmd_serve(args: argparse.Namespace) -> int:
    import zmq

    from backend.service.security import SecurityError
    from backend.service.server import Server, ServerConfig
    from backend.service.jobstore import StoreError
    from backend.service.retention import RetentionConfig

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backend.service.devices import gpu_count

    workers = args.workers if args.workers is not None else max(1, gpu_count())
    try:
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        retention = RetentionConfig(keep_days=args.keep_days,
                                    max_disk_bytes=int(args.max_disk_gb * 1e9) if args.max_disk_gb is not None else None)
        config = ServerConfig(bind=args.bind, data_dir=Path(args.data_dir), workers=workers,
                              keys_dir=Path(args.keys) if args.keys else None, engine=args.engine,
                              ray=_ray_config(args), retention=retention)
        server = Server(config)
    except (SecurityError, StoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # SIGTERM (systemd, docker stop) ends the loop like Ctrl-C; the loop closes the workers on the way out.
    # (The Ray engine restores these after ray.init, which would otherwise install its own.)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())

    import threading

    def announce() -> None:
        if server.ready.wait(300) and server.endpoint:
            mode = ("CURVE, one key per artist" if config.keys_dir else
                    "plaintext on loopback: every local user of this machine can reach every job; use --keys for one key per artist")
            print(f"headrig serve: listening on {server.endpoint} ({mode}); {config.engine} engine; data in {config.data_dir}",
                  flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    except zmq.ZMQError as exc:
        print(f"error: cannot listen on {args.bind}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ImportError as exc:  # --engine ray without the extra
        print(f"error: --engine ray needs Ray ({exc}); install it with: pip install -e \".[cluster]\"", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("headrig serve: stopped", flush=True)
    return EXIT_OK


def _ray_config(args: argparse.Namespace):
    if args.engine != "ray":
        if args.ray_address:
            raise ValueError("--ray-address needs --engine ray")
        return None
    if _loopback_ray(args.ray_address):
        # Read when Ray is imported: a local (or loopback) cluster then never takes the machine's LAN
        # address as its node address, so nothing of Ray listens beyond 127.0.0.1.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reports to the internet
    try:
        from backend.service.ray_engine import RayConfig
    except ImportError as exc:
        raise ValueError(f"--engine ray needs Ray ({exc}); install it with: pip install -e \".[cluster]\"") from None
    if args.gpus_per_job < 0:
        raise ValueError(f"--gpus-per-job must be 0 or more, got {args.gpus_per_job}")
    return RayConfig(address=args.ray_address, gpus_per_job=args.gpus_per_job,
                     workers=args.workers, object_store_bytes=int(args.object_store_gb * (1 << 30)))


def _loopback_ray(address: str | None) -> bool:
    """No address (Ray started here) or a loopback HOST:PORT."""
    if address is None:
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from backend.service.security import SecurityError, generate_keys

    try:
        folder = generate_keys(Path(args.dir))
    except (SecurityError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"server keys written to {folder} (server.key_secret stays on the server); add each artist with "
          f"`headrig keys add-client NAME --keys {folder}`")
    return EXIT_OK


def cmd_keys_add_client(args: argparse.Namespace) -> int:
    from backend.service.security import SecurityError, add_client

    try:
        folder = add_client(Path(args.keys), args.name, admin=args.admin)
    except (SecurityError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    role = "an admin: sees every artist's jobs" if args.admin else "sees only their own jobs"
    print(f"client {args.name} added ({role}); give {folder} to them (their key and the server's public key, "
          "nothing secret of the server's); a running server lets them in within seconds")
    return EXIT_OK


def cmd_keys_revoke_client(args: argparse.Namespace) -> int:
    from backend.service.security import SecurityError, revoke_client

    try:
        revoke_client(Path(args.keys), args.name)
    except (SecurityError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"client {args.name} revoked; a running server refuses that key within seconds")
    return EXIT_OK


def register(subparsers) -> None:
    """Add ``serve`` and ``keys`` to ``headrig``'s parser."""
    serve = subparsers.add_parser("serve", help="run the job server the Blender add-on talks to")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555",
                       help="ZeroMQ endpoint (default tcp://127.0.0.1:5555; non-loopback needs --keys)")
    serve.add_argument("--data-dir", required=True, help="folder for jobs, uploads and results (kept across restarts)")
    serve.add_argument("--workers", type=int, default=None,
                       help="workers (default: one per GPU, each pinned to its GPU; 1 without a GPU; Ray: one per GPU of the cluster)")
    serve.add_argument("--keys", default=None, help="CURVE key folder from `headrig keys generate` (required off loopback)")
    serve.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: worker processes on this machine (default); ray: a Ray cluster (pip install -e \".[cluster]\")")
    serve.add_argument("--ray-address", default=None,
                       help="auto or HOST:PORT of a running cluster (`ray start --head`); default: start Ray on this machine")
    serve.add_argument("--gpus-per-job", type=float, default=1.0, help="Ray engine: GPUs each worker holds (default 1)")
    serve.add_argument("--object-store-gb", type=float, default=3.0,
                       help="Ray engine, local instance: object store size in GiB (inputs and results travel through it; default 3)")
    serve.add_argument("--keep-days", type=float, default=30.0, help="delete finished jobs this many days after they ended (default 30)")
    serve.add_argument("--max-disk-gb", type=float, default=None,
                       help="refuse new jobs once inputs and results take this many GB (finished results are never deleted early)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log requests and job changes")
    serve.set_defaults(func=cmd_serve)

    keys = subparsers.add_parser("keys", help="CURVE keys for the server")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="write the server's key pair (never overwrites)")
    gen.add_argument("dir", help="folder for the keys")
    gen.set_defaults(func=cmd_keys_generate)
    add = keys_sub.add_parser("add-client", help="a key pair for one artist: DIR/clients/NAME is the folder to give them")
    add.add_argument("name", help="the artist's name (letters, digits, '.', '_', '-')")
    add.add_argument("--keys", required=True, help="the server's key folder (from `headrig keys generate`)")
    add.add_argument("--admin", action="store_true", help="this key sees, fetches and cancels every artist's jobs")
    add.set_defaults(func=cmd_keys_add_client)
    rev = keys_sub.add_parser("revoke-client", help="stop letting an artist's key in and delete its key files")
    rev.add_argument("name")
    rev.add_argument("--keys", required=True, help="the server's key folder")
    rev.set_defaults(func=cmd_keys_revoke_client)
