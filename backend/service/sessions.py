"""Who is talking to ``headrig serve``: one session per peer identity, and what that client may see.

With CURVE keys a client is its public key as ZAP authenticated it (``security.user_id``): it cannot
be forged, it owns the jobs it submits, and ``admins/`` keys see every job. A key revoked while its
connection is open is refused at its next request (ZAP only checks new connections). Without keys a
client is the name it sends in ``hello``: advisory only, which is why a plaintext server stays on
loopback and says that every local user can reach every job.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

from backend.service import security
from shared.protocol import Code, ProtocolError

MAX_SESSIONS = 4096             # remembered peer identities (oldest forgotten first)
REVOKED = "this client's key was revoked on the server; ask its owner for a new one"


@dataclass
class Session:
    client: str                 # the owner id: "curve:<public key>" or the declared name
    version: int                # the negotiated protocol version
    admin: bool = False


class Sessions:
    """Peer identity -> ``Session``; ``keys_dir`` None means a plaintext (loopback) server."""

    def __init__(self, keys_dir: Path | None):
        self.keyring = security.KeyRing(keys_dir) if keys_dir is not None else None
        self._by_peer: collections.OrderedDict[bytes, Session] = collections.OrderedDict()

    def greet(self, identity: bytes, declared: str, zap_user_id: str | None, version: int) -> Session:
        """Start (or restart) the session of a peer that said hello."""
        if self.keyring is not None:
            client = security.user_id(zap_user_id or "")
            if client not in self.keyring.clients:
                raise ProtocolError(Code.BAD_STATE, REVOKED)
        else:
            client = declared.strip()[:200] or "anonymous"
        session = Session(client, version, self.keyring is not None and client in self.keyring.admins)
        self._by_peer[identity] = session
        self._by_peer.move_to_end(identity)
        while len(self._by_peer) > MAX_SESSIONS:
            self._by_peer.popitem(last=False)
        return session

    def get(self, identity: bytes) -> Session:
        session = self._by_peer.get(identity)
        if session is None:
            raise ProtocolError(Code.BAD_STATE, "say hello first")
        if self.keyring is not None and session.client not in self.keyring.clients:
            del self._by_peer[identity]
            raise ProtocolError(Code.BAD_STATE, REVOKED)
        self._by_peer.move_to_end(identity)
        return session

    @staticmethod
    def may_see(session: Session, owner: str) -> bool:
        return session.admin or owner == session.client

    def refresh_keys(self) -> bool:
        """Re-read the key folders; True when the allowed keys changed (the ZAP handler must follow)."""
        return self.keyring is not None and self.keyring.refresh()
