"""The MRF queue's bookkeeping (no healing here: healing/reconstruct.py has its own tests):
one entry per key with the newest report, bounded with the overflow counted, and saved
so that a restarted node takes its queue back."""

from __future__ import annotations

from shardfleet.healing.mrf import MRF


def test_one_entry_per_key_bounded_and_counted(tmp_path):
    mrf = MRF(None, capacity=3, path=tmp_path / "mrf.msgpack")  # type: ignore[arg-type]
    mrf.add("b", "k1", "v1", [3])
    mrf.add("b", "k1", "v2", [2, 1])  # the same key again: one entry, the newest report
    mrf.add("b", "k2", "v3", [0])
    mrf.add("b", "k3", "v4", [0])
    mrf.add("b", "k4", "v5", [0])  # over capacity: dropped, counted, left to the scanner
    assert len(mrf) == 3 and mrf.dropped == 1
    assert mrf.entries[("b", "k1")].vid == "v2" and mrf.entries[("b", "k1")].positions == [1, 2]
    mrf.add("b", "k2", "v6", [1])  # a newer report moves its key to the end
    assert list(mrf.entries) == [("b", "k1"), ("b", "k3"), ("b", "k2")]


def test_the_queue_survives_a_restart(tmp_path):
    (tmp_path / "format.json").write_text("{}")  # the queue is kept on a formatted drive
    path = tmp_path / "mrf.msgpack"
    mrf = MRF(None, path=path)  # type: ignore[arg-type]
    for i in range(5):
        mrf.add("bucket", f"key-{i}", f"{i:032x}", [i % 4])
    mrf._save()
    again = MRF(None, path=path)  # type: ignore[arg-type]
    assert [(e.key, e.vid, e.positions) for e in again.entries.values()] == [
        (f"key-{i}", f"{i:032x}", [i % 4]) for i in range(5)
    ]
    path.write_bytes(b"\xc1 not msgpack")  # a torn file: start empty, do not fail
    assert len(MRF(None, path=path)) == 0  # type: ignore[arg-type]


def test_the_queue_is_not_saved_into_a_wiped_drive(tmp_path):
    mrf = MRF(None, path=tmp_path / "mrf.msgpack")  # type: ignore[arg-type]
    mrf.add("bucket", "key", "0" * 32, [1])
    mrf._save()  # no format.json here: a file would keep the slot from being reused
    assert list(tmp_path.iterdir()) == []
