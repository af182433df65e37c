"""`heal status` says done only when nothing is left: no MRF entry, no pass running or
asked for, and no replaced drive still waiting for the clean pass that proves it whole.
(CI once saw "done" between a pass that failed on one object and its retry; the next
read below quorum then found that drive's listing was still no evidence.)"""

from types import SimpleNamespace

import pytest

from shardfleet.node.admin import heal_local, render_heal


class Status:
    def __init__(self, **status):
        self._status = status

    def status(self):
        return self._status


def mrf(depth=0):
    return Status(depth=depth, healed=0, failed=0, bytes=0)


def scanner(running=False, pending=False):
    return Status(
        running=running, pending=pending, deep=False, scanned=0, healed=0, failed=0, bytes=0,
        progress=None, eta_s=None,
    )  # fmt: skip


CONFIG = SimpleNamespace(node="node3")


@pytest.mark.parametrize(
    "heal,done",
    [
        ({"mrf": mrf(), "scanner": scanner()}, True),
        ({"mrf": mrf(), "scanner": scanner(), "healing_drives": lambda: []}, True),
        ({"mrf": mrf(2), "scanner": scanner()}, False),
        ({"mrf": mrf(), "scanner": scanner(running=True)}, False),
        ({"mrf": mrf(), "scanner": scanner(pending=True)}, False),
        (
            {"mrf": mrf(), "scanner": scanner(), "healing_drives": lambda: ["/d/node3/drive1"]},
            False,
        ),
    ],
)
def test_done_only_when_nothing_is_left(heal, done):
    st = heal_local(CONFIG, heal)
    assert st["done"] is done
    assert st["healing_drives"] == (heal["healing_drives"]() if "healing_drives" in heal else [])


def test_a_drive_waiting_for_its_pass_is_shown():
    st = heal_local(
        CONFIG, {"mrf": mrf(), "scanner": scanner(), "healing_drives": lambda: ["/d/node3/drive1"]}
    )
    text = render_heal({"done": st["done"], "nodes": [st], "unreachable": []})
    assert "healing: in progress" in text
    assert "drive /d/node3/drive1: replaced, not yet fully healed" in text
