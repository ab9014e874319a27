"""The gateway's waiting line: queued jobs taken round-robin by owner (fair share).

One artist's batch of 50 jobs must not hold every GPU while another artist's single job waits
behind it. Each owner has their own first-in-first-out line; ``pop`` serves the owners in turn, so a
newcomer waits for at most one job of every other owner. Owners are the authenticated ids the
server uses for ownership (a CURVE key), so nobody gains turns by changing a declared name.
"""

from __future__ import annotations

import collections


class FairQueue:
    """Job ids waiting for a worker, per owner; ``pop`` is round-robin over owners, FIFO within one."""

    def __init__(self):
        self._lines: collections.OrderedDict[str, collections.deque[str]] = collections.OrderedDict()
        self._owner: dict[str, str] = {}

    def push(self, job_id: str, owner: str) -> None:
        if job_id in self._owner:
            return
        self._owner[job_id] = owner
        self._lines.setdefault(owner, collections.deque()).append(job_id)  # a new owner joins the turn's end

    def pop(self) -> str | None:
        """The next job: the first of the owner whose turn it is (who then moves to the end)."""
        if not self._lines:
            return None
        owner, line = next(iter(self._lines.items()))
        job_id = line.popleft()
        del self._owner[job_id]
        if line:
            self._lines.move_to_end(owner)
        else:
            del self._lines[owner]
        return job_id

    def remove(self, job_id: str) -> bool:
        owner = self._owner.pop(job_id, None)
        if owner is None:
            return False
        line = self._lines[owner]
        line.remove(job_id)
        if not line:
            del self._lines[owner]
        return True

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._owner

    def __len__(self) -> int:
        return len(self._owner)
