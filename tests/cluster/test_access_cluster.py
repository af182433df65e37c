"""Users, bucket policies and CORS across the 4-node dev cluster: what is set through one
node holds on every other (within the 2 s configuration cache), with boto3 and plain HTTP.

- bob is denied alice's bucket on every node until her policy, set through node 1, grants
  him reads; then he reads through nodes 2-4 and is still refused writes;
- anonymous GET allowed by the policy works through any node, anonymous PUT stays denied;
- an explicit Deny added to the policy beats the Allow everywhere;
- CORS rules set through node 1 answer preflights on node 4;
- every refusal leaves the stored bytes as they were.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shardfleet.node.devcluster import DevCluster, DevClusterSpec, free_base_port
from tests.cluster.conftest import client as root_client

pytestmark = pytest.mark.timeout(240)

ALICE = ("alice-key", "alice-secret-1")
BOB = ("bob-key", "bob-secret-22")
USERS = "".join(
    f'\n[[users]]\naccess_key = "{a}"\nsecret_key = "{s}"\ndisplay_name = "{a[:-4]}"\n'
    for a, s in (ALICE, BOB)
)
ORIGIN = "https://team.example"


@pytest.fixture
def cluster(tmp_path) -> Iterator[DevCluster]:
    spec = DevClusterSpec(
        nodes=4,
        drives_per_node=2,
        ec="2+2",
        data=tmp_path / "cluster",
        base_port=free_base_port(4),
        heartbeat=0.5,
        offline_after=5.0,
        extra_config=USERS,
    )
    cluster = DevCluster(spec)
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()


def endpoint(cluster: DevCluster, i: int) -> str:
    return f"http://127.0.0.1:{cluster.spec.base_port + i}"


def client(cluster: DevCluster, i: int, creds: tuple[str, str]):
    return boto3.client(
        "s3",
        endpoint_url=endpoint(cluster, i),
        aws_access_key_id=creds[0],
        aws_secret_access_key=creds[1],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def http(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def code_of(call: Callable[[], object]) -> str:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return "OK"


def eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """The configuration cache is 2 s: a change through one node shows on the others by
    then; this waits a little longer than that on a busy machine."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_policies_and_cors_hold_on_every_node(cluster):
    alice = client(cluster, 1, ALICE)
    bobs = {i: client(cluster, i, BOB) for i in (1, 2, 3, 4)}
    alice.create_bucket(Bucket="team")
    alice.put_object(Bucket="team", Key="doc.txt", Body=b"alice's words")
    # another user's bucket: closed, and its name taken, through every node
    for i, bob in bobs.items():
        assert (
            code_of(lambda b=bob: b.get_object(Bucket="team", Key="doc.txt")) == "AccessDenied"
        ), i
    assert code_of(lambda: bobs[3].create_bucket(Bucket="team")) == "BucketAlreadyExists"
    assert code_of(lambda: bobs[2].put_object(Bucket="team", Key="doc.txt", Body=b"x")) == (
        "AccessDenied"
    )
    url = f"{endpoint(cluster, 4)}/team/doc.txt"
    assert http("GET", url)[0] == 403

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BobReads",
                "Effect": "Allow",
                "Principal": {"AWS": [BOB[0]]},
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": ["arn:aws:s3:::team", "arn:aws:s3:::team/*"],
            },
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::team/*",
            },
        ],
    }
    alice.put_bucket_policy(Bucket="team", Policy=json.dumps(policy))
    for i, bob in bobs.items():
        eventually(
            lambda b=bob: code_of(lambda: b.get_object(Bucket="team", Key="doc.txt")) == "OK",
            f"node {i} did not apply the policy",
        )
        assert bob.get_object(Bucket="team", Key="doc.txt")["Body"].read() == b"alice's words"
        assert [o["Key"] for o in bob.list_objects_v2(Bucket="team")["Contents"]] == ["doc.txt"]
        # reads granted, writes not
        assert code_of(lambda b=bob: b.put_object(Bucket="team", Key="doc.txt", Body=b"x")) == (
            "AccessDenied"
        )
        assert code_of(lambda b=bob: b.delete_object(Bucket="team", Key="doc.txt")) == (
            "AccessDenied"
        )
    for i in (2, 3, 4):  # anonymous: GET allowed by the policy, PUT still denied
        status, _, body = http("GET", f"{endpoint(cluster, i)}/team/doc.txt")
        assert (status, body) == (200, b"alice's words"), i
        status, _, body = http("PUT", f"{endpoint(cluster, i)}/team/doc.txt", body=b"vandal")
        assert status == 403 and b"<Code>AccessDenied</Code>" in body, i

    # an explicit Deny wins over both Allows, on every node
    policy["Statement"].append(
        {
            "Sid": "NoSecrets",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::team/secret/*",
        }
    )
    alice.put_object(Bucket="team", Key="secret/plan.txt", Body=b"the plan")
    client(cluster, 2, ALICE).put_bucket_policy(Bucket="team", Policy=json.dumps(policy))
    for i, bob in bobs.items():
        eventually(
            lambda b=bob: (
                code_of(lambda: b.get_object(Bucket="team", Key="secret/plan.txt"))
                == "AccessDenied"
            ),
            f"node {i} did not apply the Deny",
        )
        assert bob.get_object(Bucket="team", Key="doc.txt")["Body"].read() == b"alice's words"
        assert http("GET", f"{endpoint(cluster, i)}/team/secret/plan.txt")[0] == 403
    # the owner is bound by her own Deny too; the root is not
    assert code_of(lambda: alice.get_object(Bucket="team", Key="secret/plan.txt")) == (
        "AccessDenied"
    )
    root = root_client(endpoint(cluster, 3))
    assert root.get_object(Bucket="team", Key="secret/plan.txt")["Body"].read() == b"the plan"

    # CORS rules set through node 1 answer preflights on node 4
    alice.put_bucket_cors(
        Bucket="team",
        CORSConfiguration={"CORSRules": [{"AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET"]}]},
    )
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    eventually(
        lambda: http("OPTIONS", f"{endpoint(cluster, 4)}/team/doc.txt", preflight)[0] == 200,
        "node 4 did not apply the CORS rules",
    )
    status, headers, body = http("GET", f"{endpoint(cluster, 3)}/team/doc.txt", {"Origin": ORIGIN})
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    # nothing any refusal touched has changed
    assert alice.get_object(Bucket="team", Key="doc.txt")["Body"].read() == b"alice's words"
    assert sorted(o["Key"] for o in alice.list_objects_v2(Bucket="team")["Contents"]) == [
        "doc.txt",
        "secret/plan.txt",
    ]
