"""``headrig client ...``: talk to a running ``headrig serve`` (reconstruct, probe, jobs, status, fetch, cancel).

Exit codes as everywhere: 0 success; 2 bad input (a local file missing or empty, or the server refused
the input with a code such as bad_input, no_face, not_image); 1 anything else (the server unreachable,
an internal error, an unsupported protocol version, a job interrupted or cancelled, a damaged download).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

DEFAULT_SERVER = "tcp://127.0.0.1:5555"
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
# Codes that are not the user's input: everything else a server or job reports is (exit 2).
FAILURE_CODES = frozenset({"server_unreachable", "internal", "unsupported_version", "timeout", "interrupted",
                           "upload_interrupted", "result_lost", "corrupt", "cancelled", "closed", "bad_frame",
                           "bad_message", "unknown_type", "worker_crashed", "worker_timeout", "node_lost",
                           "disk_full"})


def exit_code_for(code: str) -> int:
    return EXIT_FAILURE if code in FAILURE_CODES else EXIT_BAD_INPUT


def register(subparsers) -> None:
    """Add ``client`` and its subcommands to ``headrig``'s parser."""
    client = subparsers.add_parser("client", help="send jobs to a running `headrig serve` and fetch results")
    sub = client.add_subparsers(dest="client_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--server", default=DEFAULT_SERVER, help=f"server address (default {DEFAULT_SERVER})")
        p.add_argument("--keys", default=None, help="CURVE key folder from `headrig keys generate` (encrypted servers)")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply (default 10)")
        p.add_argument("--retries", type=int, default=3, help="tries before giving up on the server (default 3)")
        return p

    rec = common(sub.add_parser("reconstruct", help="reconstruct a head from photos on the server"))
    rec.add_argument("photos", nargs="+", help="one or more photos of the same person")
    rec.add_argument("-o", "--output", required=True, help="bundle folder to create")
    rec.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    rec.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(client_func=cmd_reconstruct)

    ret = common(sub.add_parser("retarget", help="track a driving video on the server; fetch its keyframes"))
    ret.add_argument("video", help="the driving video")
    ret.add_argument("-o", "--output", required=True, help="animation folder to create (animation.json, livelink.csv)")
    ret.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    ret.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    from backend.video_commands import add_calibration_options

    add_calibration_options(ret)
    ret.set_defaults(client_func=cmd_retarget)

    probe = common(sub.add_parser("probe", help="health check: the server hashes the files (and waits --seconds)"))
    probe.add_argument("files", nargs="+", help="files to send")
    probe.add_argument("--seconds", type=float, default=0.0, help="make the probe job run this long (progress events)")
    probe.add_argument("-o", "--output", default=None, help="also keep the result folder here")
    probe.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    probe.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    probe.set_defaults(client_func=cmd_probe)

    jobs = common(sub.add_parser("jobs", help="list this server's jobs"))
    jobs.set_defaults(client_func=cmd_jobs)

    status = common(sub.add_parser("status", help="show one job"))
    status.add_argument("job_id")
    status.set_defaults(client_func=cmd_status)

    fetch = common(sub.add_parser("fetch", help="download a finished job's result folder"))
    fetch.add_argument("job_id")
    fetch.add_argument("-o", "--output", required=True, help="folder to create")
    fetch.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    fetch.set_defaults(client_func=cmd_fetch)

    cancel = common(sub.add_parser("cancel", help="cancel a job"))
    cancel.add_argument("job_id")
    cancel.set_defaults(client_func=cmd_cancel)
    client.set_defaults(func=_dispatch)


def _dispatch(args: argparse.Namespace) -> int:
    """Run a client subcommand, turning every ClientError into one line and its exit code."""
    from shared.client import ClientError

    try:
        return args.client_func(args)
    except ClientError as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        return exit_code_for(exc.code)
    except OSError as exc:  # e.g. an unreadable key folder or output location
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _client(args: argparse.Namespace):
    from shared.client import ClientError, HeadRigClient

    keys = Path(args.keys) if args.keys else None
    try:
        return HeadRigClient(args.server, keys_dir=keys, client_name="headrig-cli", timeout_s=args.timeout,
                             retries=args.retries)
    except ValueError as exc:  # CurveKeyError: missing or unreadable key files
        raise ClientError("bad_input", str(exc)) from None


def _output_problem(out: Path, force: bool) -> str | None:
    """One line when ``out`` may not be written: it exists without --force, or --force would replace a
    folder HeadRig did not write (checked before any job runs, so no work is wasted)."""
    from shared.folders import replace_refusal

    if out.exists() and not force:
        return f"{out}: output folder already exists; choose another -o or pass --force to replace it"
    refusal = replace_refusal(out) if force else None
    return f"{out}: {refusal}" if refusal else None


def _check_files(paths: list[str]) -> str | None:
    """One line naming the first unusable local file, or None."""
    names = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            return f"{p}: file not found; check the path"
        if not p.is_file():
            return f"{p}: not a file; pass image files"
        if p.stat().st_size == 0:
            return f"{p}: the file is empty; pass a real photo"
        if p.name in names:
            return f"{p}: another input has the same file name {p.name!r}; rename one (the server sees names only)"
        names.add(p.name)
    return None


def _run_job(client, kind: str, params: dict, files: list[str], quiet: bool, label: str):
    """Submit, show progress, wait; returns the job id of a done job or raises ClientError."""
    from shared.client import ClientError

    job = client.submit(kind, params, [Path(f) for f in files])
    print(f"job {job} submitted to {client.address}", file=sys.stderr)
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=100, desc=label, unit="%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
                   file=sys.stderr, leave=False)

    def on_progress(event) -> None:
        if bar is not None and event.type == "progress":
            bar.n = round(100 * event.fraction, 1)
            bar.set_postfix_str(event.stage, refresh=False)
            bar.refresh()

    try:
        final = client.wait(job, on_progress)
    except KeyboardInterrupt:
        try:
            client.cancel(job)
            print(f"\njob {job} cancelled", file=sys.stderr)
        except ClientError:
            pass
        raise
    finally:
        if bar is not None:
            bar.close()
    if final.type == "failed":
        raise ClientError(final.code or "internal", final.message or f"job {job} failed")
    if final.type == "cancelled":
        raise ClientError("cancelled", f"job {job} was cancelled")
    return job


def cmd_reconstruct(args: argparse.Namespace) -> int:
    out = Path(args.output)
    problem = _check_files(args.photos) or _output_problem(out, args.force)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    with _client(args) as client:
        job = _run_job(client, "reconstruct", {}, args.photos, args.quiet, "reconstruct")
        bundle = client.fetch(job, out, force=args.force)
    print(f"Head bundle: {bundle.resolve()}")
    try:
        from shared.bundle import bundle_summary, read_bundle

        print(bundle_summary(read_bundle(bundle, verify_hashes=True)))
    except Exception as exc:  # the bundle is there (verified by sha256); the summary is a courtesy
        print(f"  note: could not summarise the bundle ({exc})", file=sys.stderr)
    return EXIT_OK


def cmd_retarget(args: argparse.Namespace) -> int:
    from backend.errors import InputError
    from backend.video_commands import retarget_config

    out = Path(args.output)
    problem = _check_files([args.video]) or _output_problem(out, args.force)
    try:
        params = retarget_config(args).to_dict() if problem is None else {}
    except InputError as exc:
        problem = exc.one_line()
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    with _client(args) as client:
        job = _run_job(client, "retarget", params, [args.video], args.quiet, "retarget")
        folder = client.fetch(job, out, force=args.force)
    print(f"Animation: {folder.resolve()} (animation.json, livelink.csv)")
    return EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    problem = _check_files(args.files) or (_output_problem(Path(args.output), args.force) if args.output else None)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.seconds < 0:
        print("--seconds must be >= 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    params = {"seconds": args.seconds} if args.seconds else {}
    with _client(args) as client:
        job = _run_job(client, "probe", params, args.files, args.quiet, "probe")
        if args.output:
            folder = client.fetch(job, Path(args.output), force=args.force)
            text = (folder / "probe.json").read_text(encoding="utf-8")
        else:
            with tempfile.TemporaryDirectory(prefix="headrig-probe-") as tmp:
                text = (client.fetch(job, Path(tmp) / "result") / "probe.json").read_text(encoding="utf-8")
    print(text.strip())
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items = client.list_jobs()
    if not items:
        print("no jobs")
    for item in items:
        err = item.get("error") or {}
        extra = f"  {err.get('code')}: {err.get('message')}" if isinstance(err, dict) and err else ""
        print(f"{item.get('job') or item.get('job_id', '?')}  {item.get('kind', '?'):<12} {item.get('state', '?'):<10} "
              f"{item.get('created', '')}{extra}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.status(args.job_id), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    out = Path(args.output)
    problem = _output_problem(out, args.force)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    with _client(args) as client:
        folder = client.fetch(args.job_id, out, force=args.force)
    print(f"Fetched: {folder.resolve()}")
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.cancel(args.job_id)
        state = client.status(args.job_id).get("state", "?")
    print(f"job {args.job_id}: {state}")
    return EXIT_OK
