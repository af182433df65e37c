"""Errors of the object layer (no HTTP here; node/s3/errors.py maps them).

ObjectError
├── NoSuchBucket, BucketExists, BucketNotEmpty
├── NoSuchKey
├── NoSuchUpload         unknown, aborted or already completed multipart upload
├── ReadQuorumLost       fewer than k drives agree on or can serve the object
├── WriteQuorumLost      fewer than W drives took the write; it was undone
└── LockConflict         a key's lock was not won within the wait (cluster/keylock.py)
"""

from __future__ import annotations


class ObjectError(Exception):
    pass


class NoSuchBucket(ObjectError):
    pass


class BucketExists(ObjectError):
    pass


class BucketNotEmpty(ObjectError):
    pass


class NoSuchKey(ObjectError):
    pass


class NoSuchUpload(ObjectError):
    pass


class QuorumLost(ObjectError):
    def __init__(
        self, what: str, need: int, got: int, total: int, errors: dict[int, BaseException]
    ):
        detail = "; ".join(f"drive {i}: {type(e).__name__}: {e}" for i, e in sorted(errors.items()))
        super().__init__(f"{what}: need {need} of {total} drives, {got} answered ({detail})")
        self.need, self.got, self.total, self.errors = need, got, total, errors


class ReadQuorumLost(QuorumLost):
    pass


class WriteQuorumLost(QuorumLost):
    pass


class ClusterPartitioned(ObjectError):
    pass


class LockConflict(ObjectError):
    """A key's lock (cluster/keylock.py) was not granted by a majority of its set's drives
    within the wait: another writer held it all along, or too few drives answered."""

    def __init__(self, bucket: str, key: str, detail: str) -> None:
        super().__init__(f"lock on {bucket}/{key} not acquired: {detail}")
        self.bucket, self.key = bucket, key
