"""Which sockets this process and its descendants (Ray's GCS, raylets and workers, server subprocesses)
listen on, from /proc (Linux): tests and benchmarks check that nothing listens beyond loopback."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def descendants(pid: int | None = None) -> set[int]:
    """``pid`` (default: this process) and every process below it."""
    tree, todo, seen = _children(), [pid or os.getpid()], set()
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += tree.get(p, [])
    return seen


def _listening_inodes() -> dict[str, str]:
    """socket inode -> "address:port" of every TCP socket in LISTEN state (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc stores each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out[cols[9]] = f"{ipaddress.ip_address(raw)}:{int(hex_port, 16)}"
    return out


def listeners(pid: int | None = None) -> list[tuple[int, str, str]]:
    """(pid, process name, "address:port") of every listening TCP socket of ``pid`` and its descendants."""
    inodes, found = _listening_inodes(), []
    for p in sorted(descendants(pid)):
        try:
            name = Path(f"/proc/{p}/comm").read_text().strip()
            fds = list(Path(f"/proc/{p}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                found.append((p, name, inodes[target[8:-1]]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def non_loopback_listeners(pid: int | None = None) -> list[tuple[int, str, str]]:
    """Listening sockets of ``pid`` and its descendants that other machines could reach."""
    return [entry for entry in listeners(pid) if not is_loopback(entry[2])]
