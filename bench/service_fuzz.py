"""Fuzz a running `headrig serve` with malformed messages in bursts; after each burst a valid
request must still be answered.

    python -m bench.service_fuzz [--messages 100000] [--burst 1000] [--server ADDR]   # prints JSON

Messages: random bytes, msgpack values of the wrong shape, known types with random fields, wrong
binary-frame counts, path-traversal names in upload/fetch. A burst is sent without waiting, the
replies are drained, then a `ping` must get `pong`. Without --server a server is started.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

from bench.service_throughput import local_server
from shared.protocol import decode, encode

TYPES = ["hello", "ping", "submit", "upload", "cancel", "list", "status", "fetch", "nope", "", "welcome"]
NAMES = ["../../etc/passwd", "/etc/shadow", "a/b", "..", "x\x00y", "C:\\win", "ok.jpg", "é" * 300]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 2**63 - 1, rng.randrange(-1000, 10**6)])
    if kind == 3:
        return rng.choice([float("nan"), float("inf"), rng.random()])
    if kind == 4:
        return rng.choice(NAMES + ["".join(rng.choice("abc/.\\\x00") for _ in range(rng.randrange(12)))])
    if kind == 5:
        return rng.randbytes(rng.randrange(16))
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["job", "name", "offset", "x"]): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def malformed(rng: random.Random) -> list[bytes]:
    choice = rng.randrange(5)
    if choice == 0:
        return [rng.randbytes(rng.randrange(64))] + [rng.randbytes(8)] * rng.randrange(3)
    if choice == 1:
        return [msgpack.packb(random_value(rng), use_bin_type=True)]
    header = {"type": rng.choice(TYPES), "rid": rng.choice(["", "r", "x" * 400, 7])}
    for field in rng.sample(["job", "name", "offset", "length", "kind", "params", "inputs", "key", "versions", "client"], rng.randrange(5)):
        header[field] = random_value(rng)
    if choice == 3:  # a nearly valid upload/fetch with a hostile name
        header = {"type": rng.choice(["upload", "fetch"]), "rid": "t", "job": "0" * 32, "name": rng.choice(NAMES),
                  "offset": 0, **({"length": 10} if rng.random() < 0.5 else {})}
    blobs = [rng.randbytes(rng.randrange(32)) for _ in range(rng.randrange(3))]
    return [msgpack.packb(header, use_bin_type=True), *blobs]


def run(address: str, messages: int, burst: int, seed: int) -> dict:
    rng = random.Random(seed)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    sock.send_multipart(encode("hello", "h", versions=[1], client="fuzz"))
    assert sock.poll(5000), "no welcome"
    sock.recv_multipart()
    sent = replies = bursts_ok = 0
    start = time.perf_counter()
    while sent < messages:
        n = min(burst, messages - sent)
        for _ in range(n):
            sock.send_multipart(malformed(rng))
        sent += n
        sock.send_multipart(encode("ping", "alive"))
        alive = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not alive:
            if not sock.poll(1000):
                continue
            reply = decode(sock.recv_multipart(), from_client=False)
            replies += 1
            alive = reply.type == "pong" and reply.rid == "alive"
        if not alive:
            break
        bursts_ok += 1
    elapsed = time.perf_counter() - start
    sock.close()
    return {"messages": sent, "replies": replies, "bursts": -(-messages // burst), "bursts_answered": bursts_ok,
            "server_alive_after_every_burst": bursts_ok == -(-messages // burst), "messages_per_s": sent / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server")
    args = parser.parse_args()
    if args.server:
        report = run(args.server, args.messages, args.burst, args.seed)
    else:
        with tempfile.TemporaryDirectory() as tmp, local_server(Path(tmp)) as address:
            report = run(address, args.messages, args.burst, args.seed)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
