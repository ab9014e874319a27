"""CLI commands of the service: ``headrig serve`` and ``headrig keys generate DIR``.

Errors a user can fix (a public bind without keys, missing or existing key files, a bad folder)
are one line on stderr and exit code 2, like the rest of ``headrig``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def cmd_serve(args: argparse.Namespace) -> int:
    import zmq

    from backend.service.security import SecurityError
    from backend.service.server import Server, ServerConfig
    from backend.service.jobstore import StoreError

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backend.service.devices import gpu_count

    workers = args.workers if args.workers is not None else max(1, gpu_count())
    config = ServerConfig(bind=args.bind, data_dir=Path(args.data_dir), workers=workers,
                          keys_dir=Path(args.keys) if args.keys else None)
    try:
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        server = Server(config)
    except (SecurityError, StoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # SIGTERM (systemd, docker stop) ends the loop like Ctrl-C; the loop closes the workers on the way out.
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())

    import threading

    def announce() -> None:
        if server.ready.wait(60) and server.endpoint:
            mode = "CURVE" if config.keys_dir else "plaintext, loopback only"
            print(f"headrig serve: listening on {server.endpoint} ({mode}); data in {config.data_dir}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    except zmq.ZMQError as exc:
        print(f"error: cannot listen on {args.bind}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("headrig serve: stopped", flush=True)
    return EXIT_OK


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from backend.service.security import SecurityError, generate_keys

    try:
        folder = generate_keys(Path(args.dir))
    except (SecurityError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"keys written to {folder}: server.key_secret stays on the server; give clients client.key_secret and "
          f"server.key; authorised client keys are in {folder / 'authorized_clients'}")
    return EXIT_OK


def register(subparsers) -> None:
    """Add ``serve`` and ``keys`` to ``headrig``'s parser."""
    serve = subparsers.add_parser("serve", help="run the job server the Blender add-on talks to")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555",
                       help="ZeroMQ endpoint (default tcp://127.0.0.1:5555; non-loopback needs --keys)")
    serve.add_argument("--data-dir", required=True, help="folder for jobs, uploads and results (kept across restarts)")
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes (default: one per GPU, each pinned to its GPU; 1 without a GPU)")
    serve.add_argument("--keys", default=None, help="CURVE key folder from `headrig keys generate` (required off loopback)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log requests and job changes")
    serve.set_defaults(func=cmd_serve)

    keys = subparsers.add_parser("keys", help="CURVE keys for the server")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="write a server and a client key pair (never overwrites)")
    gen.add_argument("dir", help="folder for the keys")
    gen.set_defaults(func=cmd_keys_generate)
