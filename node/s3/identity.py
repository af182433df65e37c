"""Who is asking: the credentials a node knows, each with its canonical user id and display
name (what S3 returns as Owner and Initiator), and the anonymous requester.

The root pair (`access_key`/`secret_key`) is the operator: it owns every bucket nobody else
made, may do anything to any bucket, and alone may call the admin API. Every [[users]]
entry owns the buckets it creates; other buckets are closed to it unless a bucket policy
opens them (node/s3/access.py). The table is rebuilt from the configuration on SIGHUP
(`Users.reload`), so a credential is added, rotated or removed without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shardfleet.node.config import UserConfig


@dataclass(frozen=True, slots=True)
class Identity:
    access_key: str  # "" for an anonymous request
    canonical_id: str
    display_name: str
    root: bool = False

    @property
    def anonymous(self) -> bool:
        return not self.access_key

    @property
    def arn(self) -> str:
        """How a bucket policy's Principal names this user (besides its canonical id)."""
        return f"arn:aws:iam::shardfleet:user/{self.display_name}"


ANONYMOUS = Identity("", "65a011a29cdf8ec533ec3d1ccaae921c", "anonymous")


def canonical_id_of(access_key: str) -> str:
    """A stable 64-hex canonical id, as AWS's are, derived from the access key."""
    return hashlib.sha256(b"shardfleet user " + access_key.encode()).hexdigest()


class Users:
    def __init__(
        self,
        root: tuple[str, str],
        users: Sequence[UserConfig] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._by_key: dict[str, tuple[str, Identity]] = {}
        self.root: Identity
        self.reload(root, users, env)

    def reload(
        self,
        root: tuple[str, str],
        users: Sequence[UserConfig] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Replaces the table at once (ConfigError, and the old table kept, if a secret
        cannot be read)."""
        env = os.environ if env is None else env
        # the root's canonical id stays its access key, as every response has shown it
        root_id = Identity(root[0], root[0], root[0], root=True)
        table = {root[0]: (root[1], root_id)}
        for u in users:
            ident = Identity(
                u.access_key,
                u.canonical_id or canonical_id_of(u.access_key),
                u.display_name or u.access_key,
            )
            table[u.access_key] = (u.secret(env), ident)
        self._by_key, self.root = table, root_id

    def secret(self, access_key: str) -> str | None:
        entry = self._by_key.get(access_key)
        if entry is None:
            return None
        # constant time against the key we hold, so timing does not tell keys apart
        return entry[0] if hmac.compare_digest(access_key, entry[1].access_key) else None

    def identity(self, access_key: str) -> Identity:
        if not access_key:
            return ANONYMOUS
        entry = self._by_key.get(access_key)
        return entry[1] if entry is not None else ANONYMOUS

    def by_canonical_id(self, canonical_id: str) -> Identity | None:
        for _, ident in self._by_key.values():
            if ident.canonical_id == canonical_id:
                return ident
        return None

    def __len__(self) -> int:
        return len(self._by_key)
