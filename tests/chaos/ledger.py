"""What the cluster must answer for each key: the chaos workload's ledger.

Each key belongs to one workload thread, so its operations never race each other and the
ledger knows exactly which answers are right: the last acknowledged write (or deletion), or,
after an operation that failed midway (it may or may not have happened), either of the
states before and after it, until the next acknowledged one settles it again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

GONE = "<deleted>"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Ledger:
    allowed: dict[str, set[str]] = field(default_factory=dict)  # key -> digests or GONE
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    checked: int = 0
    # for each violation: what was read where, and the last acknowledged operation (the
    # `where` strings the caller gives: node, time, request id), to find it in the logs
    evidence: list[str] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)  # key -> its last acknowledged op

    def acked(self, key: str, data: bytes | None, where: str = "") -> None:
        self.allowed[key] = {GONE if data is None else digest(data)}
        self.last[key] = where

    def uncertain(self, key: str, data: bytes | None) -> None:
        self.allowed.setdefault(key, {GONE}).add(GONE if data is None else digest(data))

    def read(self, key: str, data: bytes | None, where: str = "") -> None:
        """Checks one read (None: 404) against the ledger; records what is wrong."""
        allowed = self.allowed.get(key, {GONE})
        self.checked += 1
        got = GONE if data is None else digest(data)
        if got in allowed:
            return
        if got == GONE:
            self.lost.append(key)  # an acknowledged write reads as absent
        elif GONE in allowed and len(allowed) == 1:
            self.resurrected.append(key)  # a deleted key came back
        else:
            self.wrong.append(key)  # bytes that were never the key's
        states = sorted(a[:8] for a in allowed)
        self.evidence.append(
            f"{key}: read {got[:8]} ({where}), allowed {states}, last acked: {self.last.get(key)}"
        )
