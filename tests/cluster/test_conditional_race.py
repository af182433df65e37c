"""Conditional writes in a real 4-node dev cluster: the condition is checked under a per-key
lock held by a majority of the set's drives, so two `If-None-Match: *` PUTs of one new key
sent at once through two different nodes never both succeed, and one always does."""

from __future__ import annotations

import os
import threading

from botocore.exceptions import ClientError

from tests.cluster.conftest import client

ROUNDS = 50


def test_concurrent_if_none_match_puts_through_two_nodes(dev_cluster):
    a, b = (client(ep) for ep in dev_cluster.endpoints[:2])
    a.create_bucket(Bucket="race")
    for r in range(ROUNDS):
        key = f"round-{r}"
        # every other round streams (above the inline limit), so both write paths race
        size = 200_000 if r % 2 else 1000
        bodies = [os.urandom(size), os.urandom(size)]
        outcomes: list[object] = [None, None]
        start = threading.Barrier(2)

        def put(i: int, s3, key=key, bodies=bodies, outcomes=outcomes, start=start) -> None:
            start.wait(10)
            try:
                s3.put_object(Bucket="race", Key=key, Body=bodies[i], IfNoneMatch="*")
                outcomes[i] = "ok"
            except ClientError as exc:
                outcomes[i] = exc.response["Error"]["Code"]

        threads = [threading.Thread(target=put, args=(i, s3)) for i, s3 in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [i for i, o in enumerate(outcomes) if o == "ok"]
        assert len(winners) == 1, (r, outcomes)
        loser = outcomes[1 - winners[0]]
        assert loser in ("PreconditionFailed", "ConditionalRequestConflict"), (r, outcomes)
        for s3 in (a, b):
            assert s3.get_object(Bucket="race", Key=key)["Body"].read() == bodies[winners[0]]
