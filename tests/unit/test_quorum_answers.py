"""The quorum choices that decide what a GET, a listing and a heal answer (pure code):
tombstones, versions too few drives hold, and what counts as evidence of absence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardfleet.cluster.drive import FileNotFound, MetaRecord, NotYetHealed, VolumeNotFound
from shardfleet.cluster.errors import NoSuchBucket, NoSuchKey, ReadQuorumLost
from shardfleet.cluster.get import resolve
from shardfleet.cluster.listing import _agreed
from shardfleet.cluster.meta import ObjectMeta, is_deleted_packed, pick_agreed, pick_agreed_packed


def version(vid: str, mtime: int) -> ObjectMeta:
    return ObjectMeta(vid, mtime, 5, "e" * 32, 2, 2, 1 << 20, [0, 1, 2, 3], inline=True)


def tomb(vid: str, mtime: int) -> ObjectMeta:
    return ObjectMeta.tombstone(vid, mtime)


A, B, T = "a" * 32, "b" * 32, "c" * 32


def test_a_tombstone_packs_small_and_round_trips():
    t = tomb(T, 7)
    packed = t.pack()
    assert is_deleted_packed(packed) and not is_deleted_packed(version(A, 1).pack())
    back = ObjectMeta.unpack(packed)
    assert back.deleted and back.vid == T and back.mtime == 7 and back.order == (7, T)


def test_a_tombstone_wins_from_one_copy_when_it_is_the_newest():
    assert pick_agreed([version(A, 1), version(A, 1), tomb(T, 2)], 2).deleted
    # a version written after the delete, on k drives, wins over it
    assert pick_agreed([version(B, 3), version(B, 3), tomb(T, 2)], 2).vid == B
    # a version newer than the tombstone on too few drives does not: the tombstone stands
    assert pick_agreed([version(B, 3), tomb(T, 2), version(A, 1), version(A, 1)], 2).deleted


@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 5), st.sampled_from([A, B, T])), max_size=6),
    st.integers(1, 4),
)
def test_packed_and_unpacked_choices_agree(copies, k):
    # a version id names one version or one tombstone, never both (uuid4)
    metas = [tomb(v.upper(), m) if d else version(v, m) for d, m, v in copies]
    a = pick_agreed(metas, k)
    b = pick_agreed_packed([m.pack() for m in metas], k)
    assert (a is None and b is None) or (a.pack() == b.pack())


class DriveErr(Exception):
    """Any drive failure: no answer either way."""


N, K, W = 4, 2, 3  # 2+2, write quorum 3: absence needs n - W + 1 = 2 drives to prove it


def records(*metas: ObjectMeta) -> dict[int, MetaRecord]:
    return {i: MetaRecord(m, None) for i, m in enumerate(metas)}


def errors(start: int, *excs: BaseException) -> dict[int, BaseException]:
    return {start + i: e for i, e in enumerate(excs)}


@pytest.mark.parametrize(
    ("results", "errs", "answer"),
    [
        # the common cases
        (records(version(A, 1), version(A, 1), version(A, 1)), {}, A),
        ({}, errors(0, *[FileNotFound()] * 4), NoSuchKey),
        ({}, errors(0, *[VolumeNotFound()] * 4), NoSuchBucket),
        (records(tomb(T, 2), tomb(T, 2), tomb(T, 2)), {}, NoSuchKey),
        # a drive that missed the delete holds the old version: the tombstone answers
        (records(version(A, 1), tomb(T, 2)), errors(2, DriveErr(), DriveErr()), NoSuchKey),
        # one copy left, two drives that never had it: it was never acknowledged
        (records(version(A, 1)), errors(1, FileNotFound(), FileNotFound(), DriveErr()), NoSuchKey),
        # one copy left, the others wiped (formatted empty, not healed): 503, not 404
        (records(version(A, 1)), errors(1, NotYetHealed(), NotYetHealed(), FileNotFound()),
         ReadQuorumLost),
        # nothing answers but one "no such key": too little to say it is absent
        ({}, errors(0, FileNotFound(), DriveErr(), DriveErr(), DriveErr()), ReadQuorumLost),
        ({}, errors(0, NotYetHealed(), NotYetHealed(), FileNotFound(), DriveErr()),
         ReadQuorumLost),
        ({}, errors(0, NotYetHealed(), FileNotFound(), FileNotFound(), DriveErr()), NoSuchKey),
    ],
)  # fmt: skip
def test_resolve(results, errs, answer):
    if isinstance(answer, str):
        assert resolve(results, errs, K, N, W).vid == answer
    else:
        with pytest.raises(answer):
            resolve(results, errs, K, N, W)


def rows(*pairs: tuple[str, ObjectMeta]) -> list[tuple[str, bytes]]:
    return [(key, meta.pack()) for key, meta in pairs]


def test_listing_leaves_out_deleted_keys_and_fails_rather_than_list_short():
    a, t = version(A, 1), tomb(T, 2)
    same = rows(("k1", a), ("k2", t))
    assert [k for k, _ in _agreed([same, same, same], None, K, 2)] == ["k1"]
    # k2 deleted where two drives saw it, the old version on the third: still gone
    mixed = [rows(("k1", a), ("k2", t)), rows(("k1", a), ("k2", t)), rows(("k1", a), ("k2", a))]
    assert [k for k, _ in _agreed(mixed, None, K, 2)] == ["k1"]
    # a key on one drive of three that answered: two prove it absent, left out
    short = [rows(("k1", a), ("k3", a)), rows(("k1", a)), rows(("k1", a))]
    assert [k for k, _ in _agreed(short, None, K, 2)] == ["k1"]
    # a key on one drive of two that answered: neither readable nor provably absent
    with pytest.raises(ReadQuorumLost):
        _agreed([rows(("k1", a), ("k3", a)), rows(("k1", a))], None, K, 2)
    # the scanner sees every key, deleted and undecided ones too
    every = _agreed([rows(("k1", a), ("k3", a)), rows(("k1", a))], None, K, 2, every=True)
    assert [k for k, _ in every] == ["k1", "k3"]
