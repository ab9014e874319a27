"""Where the avatar runs: one device switch for the whole path, and torch's CPU threads sized to the
cores actually free.

``resolve_device("auto" | "cpu" | "cuda" | "cuda:N")`` is the one switch: frames, binding, model,
MLP, trainer, evaluation and turntable all put their tensors on what it returns, and the
rasteriser then picks gsplat's kernels for CUDA tensors (``backend.avatar.raster``).

Threads. On an artist's workstation the backend shares the cores with Blender. Torch's CPU kernels
run on an OpenMP team that meets at a barrier after every parallel region; when the team has more
threads than there are free cores, each barrier waits for a thread the OS has parked behind the
neighbour's, and training slowed about tenfold beside a Cycles render (BENCHMARKS.md). So the team
is sized to the cores left free by other processes, measured from ``/proc/stat`` (busy time of
the whole machine minus this process's own), and re-sized while training runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch

DEVICES = ("auto", "cpu", "cuda")
THREADS_ENV = "HEADRIG_THREADS"  # the artist's override: a thread count, or "auto"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None) -> CUDA when available, else CPU; "cpu"; "cuda" / "cuda:N" (ValueError
    when this machine has no CUDA, rather than a silent CPU run of a GPU preset)."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this machine has no CUDA device (use --device cpu or auto)")
        return torch.device(name)
    raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {name!r}")


def _proc_stat() -> tuple[int, int, int] | None:
    """(busy, total) jiffies of the whole machine and this process's own jiffies, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    own = int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)
    return total - idle, total, own


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def others_busy_cores(interval: float = 0.25, start: tuple[int, int, int] | None = None) -> float | None:
    """Cores kept busy by other processes over ``interval`` seconds (or since ``start``, a
    ``_proc_stat()`` sample); None where /proc is not available."""
    first = start or _proc_stat()
    if first is None:
        return None
    if start is None:
        time.sleep(interval)
    second = _proc_stat()
    if second is None:
        return None
    busy, total, own = (b - a for a, b in zip(first, second))
    if total <= 0:
        return 0.0
    n_cpu = os.cpu_count() or 1
    return max(0.0, (busy - own) / total * n_cpu)


def free_threads(others_busy: float | None, cores: int | None = None) -> int:
    """Threads for torch: the usable cores minus those others keep busy (at least 1). A core
    counts as busy from 0.5 of a core's time on: a half-idle neighbour still loses its share."""
    cores = cores or usable_cores()
    if others_busy is None:
        return cores
    return max(1, min(cores, cores - int(others_busy + 0.5)))


def requested_threads(value: int | str | None = None) -> int | None:
    """The artist's thread count: ``value`` (CLI), else $HEADRIG_THREADS; None for "auto"."""
    value = value if value not in (None, "", "auto") else os.environ.get(THREADS_ENV)
    if value in (None, "", "auto"):
        return None
    n = int(value)
    if n < 1:
        raise ValueError(f"threads must be >= 1 or 'auto', got {value!r}")
    return n


@dataclass
class ThreadGovernor:
    """Sizes torch's CPU threads to the free cores, now and every ``every_s`` seconds of training
    (a render started beside a running training takes its cores back). ``fixed``: the artist's
    count, never changed. Only CPU training is governed; on CUDA the host threads barely work."""

    fixed: int | None = None
    every_s: float = 5.0
    history: list[int] = field(default_factory=list)
    _last: float = 0.0
    _sample: tuple[int, int, int] | None = None

    def start(self) -> int:
        """Set the thread count before training; returns it."""
        n = self.fixed if self.fixed is not None else free_threads(others_busy_cores())
        return self._apply(n)

    def tick(self) -> None:
        """Call once per training step: every ``every_s`` seconds, re-measure and re-size."""
        if self.fixed is not None:
            return
        now = time.perf_counter()
        if self._sample is None:
            self._sample, self._last = _proc_stat(), now
            return
        if now - self._last < self.every_s:
            return
        busy = others_busy_cores(start=self._sample)
        self._sample, self._last = _proc_stat(), now
        self._apply(free_threads(busy))

    def _apply(self, n: int) -> int:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        if not self.history or self.history[-1] != n:
            self.history.append(n)  # the counts in turn, not one entry a tick
        return n
