"""Users, bucket owners and bucket policies on a real node, with boto3 and plain HTTP.

Three credentials: the root pair (the operator), alice and bob from [[users]] (bob's
secret in a file). Each user owns the buckets it creates; another's bucket is closed until
its policy opens it; an explicit Deny beats any Allow; anonymous requests get only what a
policy grants; every refusal changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

pytestmark = pytest.mark.timeout(120)

ALICE = ("alice-key", "alice-secret-1")
BOB = ("bob-key", "bob-secret-22")
CAROL = ("carol-key", "carol-secret-333")


def client(node, creds):
    return boto3.client(
        "s3",
        endpoint_url=node.endpoint,
        aws_access_key_id=creds[0],
        aws_secret_access_key=creds[1],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def code(call) -> str:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return "ok"


def anonymous(node, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(node.endpoint + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def config_text(tmp_path, *users: tuple[str, str]) -> str:
    (tmp_path / "bob.secret").write_text(BOB[1] + "\n")
    out = ""
    for key, secret in users:
        out += f'[[users]]\naccess_key = "{key}"\n'
        if key == BOB[0]:
            out += f'secret_file = "{tmp_path / "bob.secret"}"\ndisplay_name = "Bob"\n'
        else:
            out += f'secret_key = "{secret}"\n'
    return out


@pytest.fixture
def users_node(node_factory, tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(config_text(tmp_path, ALICE, BOB))
    node = node_factory("access", args=["--config", str(path)])
    node.config_path = path
    return node


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_owners_and_other_users(users_node):
    root, alice, bob = users_node.client(), client(users_node, ALICE), client(users_node, BOB)
    alice.create_bucket(Bucket="alice-b")
    alice.put_object(Bucket="alice-b", Key="doc", Body=b"alice's")
    bob.create_bucket(Bucket="bob-b")
    # another user's bucket: closed, and its name taken
    assert code(lambda: bob.get_object(Bucket="alice-b", Key="doc")) == "AccessDenied"
    assert code(lambda: bob.list_objects_v2(Bucket="alice-b")) == "AccessDenied"
    assert code(lambda: bob.put_object(Bucket="alice-b", Key="x", Body=b"bob")) == "AccessDenied"
    assert code(lambda: bob.delete_object(Bucket="alice-b", Key="doc")) == "AccessDenied"
    assert code(lambda: bob.delete_bucket(Bucket="alice-b")) == "AccessDenied"
    assert code(lambda: bob.create_bucket(Bucket="alice-b")) == "BucketAlreadyExists"
    assert code(lambda: alice.create_bucket(Bucket="alice-b")) == "BucketAlreadyOwnedByYou"
    assert code(lambda: bob.get_bucket_policy(Bucket="alice-b")) == "AccessDenied"
    assert (
        code(  # nor may bob copy it out into his own bucket
            lambda: bob.copy_object(Bucket="bob-b", Key="c", CopySource="alice-b/doc")
        )
        == "AccessDenied"
    )
    assert "Contents" not in bob.list_objects_v2(Bucket="bob-b")
    # each lists its own; the root lists all; owners carry their names
    listed = bob.list_buckets()
    assert [b["Name"] for b in listed["Buckets"]] == ["bob-b"]
    assert listed["Owner"]["DisplayName"] == "Bob" and len(listed["Owner"]["ID"]) == 64
    assert [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["alice-b"]
    assert {b["Name"] for b in root.list_buckets()["Buckets"]} == {"alice-b", "bob-b"}
    owner = alice.list_objects(Bucket="alice-b")["Contents"][0]["Owner"]
    assert owner["DisplayName"] == "alice-key"
    # the root may do anything; nothing of bob's attempts was stored or removed
    assert root.get_object(Bucket="alice-b", Key="doc")["Body"].read() == b"alice's"
    assert [o["Key"] for o in root.list_objects_v2(Bucket="alice-b")["Contents"]] == ["doc"]
    # the system bucket does not exist for clients, not even for the root
    assert code(lambda: root.list_objects_v2(Bucket="SYS_shardfleet")) in (
        "NoSuchBucket",
        "InvalidBucketName",
    )


def test_a_policy_grants_and_an_explicit_deny_wins(users_node):
    alice, bob = client(users_node, ALICE), client(users_node, BOB)
    alice.create_bucket(Bucket="shared")
    for key in ("public/a", "secret/b", "tmp/c", "keep/d"):
        alice.put_object(Bucket="shared", Key=key, Body=key.encode())
    bob_arn = "arn:aws:iam::shardfleet:user/Bob"
    alice.put_bucket_policy(
        Bucket="shared",
        Policy=policy(
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::shared/public/*"},
            {"Effect": "Allow", "Principal": {"AWS": [bob_arn]}, "Action": "s3:GetObject",
             "Resource": "arn:aws:s3:::shared/*"},
            {"Effect": "Deny", "Principal": {"AWS": bob_arn}, "Action": "s3:*",
             "Resource": "arn:aws:s3:::shared/secret/*"},
            {"Effect": "Allow", "Principal": {"AWS": bob_arn}, "Action": "s3:DeleteObject",
             "Resource": "arn:aws:s3:::shared/tmp/*"},
            {"Effect": "Allow", "Principal": {"AWS": bob_arn}, "Action": "s3:ListBucket",
             "Resource": "arn:aws:s3:::shared", "Condition": {"StringLike": {"s3:prefix": "public/*"}}},
        ),
    )  # fmt: skip
    assert bob.get_object(Bucket="shared", Key="keep/d")["Body"].read() == b"keep/d"
    assert code(lambda: bob.get_object(Bucket="shared", Key="secret/b")) == "AccessDenied"
    assert code(lambda: bob.put_object(Bucket="shared", Key="new", Body=b"x")) == "AccessDenied"
    # conditions: bob may list public/ only
    assert bob.list_objects_v2(Bucket="shared", Prefix="public/")["KeyCount"] == 1
    assert code(lambda: bob.list_objects_v2(Bucket="shared")) == "AccessDenied"
    # DeleteObjects is decided key by key
    out = bob.delete_objects(
        Bucket="shared", Delete={"Objects": [{"Key": "tmp/c"}, {"Key": "keep/d"}]}
    )
    assert [d["Key"] for d in out["Deleted"]] == ["tmp/c"]
    assert [(e["Key"], e["Code"]) for e in out["Errors"]] == [("keep/d", "AccessDenied")]
    keys = [o["Key"] for o in alice.list_objects_v2(Bucket="shared")["Contents"]]
    assert keys == ["keep/d", "public/a", "secret/b"]
    # anonymous: only what Principal "*" was given
    assert anonymous(users_node, "GET", "/shared/public/a") == (200, b"public/a")
    status, body = anonymous(users_node, "GET", "/shared/keep/d")
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    status, body = anonymous(users_node, "PUT", "/shared/public/evil", b"evil")
    assert status == 403 and b"AccessDenied" in body
    assert code(lambda: alice.head_object(Bucket="shared", Key="public/evil")) == "404"
    # the policy as it was sent, its status, and its removal
    stored = json.loads(alice.get_bucket_policy(Bucket="shared")["Policy"])
    assert len(stored["Statement"]) == 5
    assert alice.get_bucket_policy_status(Bucket="shared")["PolicyStatus"]["IsPublic"] is True
    alice.delete_bucket_policy(Bucket="shared")
    assert code(lambda: alice.get_bucket_policy(Bucket="shared")) == "NoSuchBucketPolicy"
    assert code(lambda: bob.get_object(Bucket="shared", Key="keep/d")) == "AccessDenied"
    assert anonymous(users_node, "GET", "/shared/public/a")[0] == 403


def test_the_owner_is_bound_by_its_own_deny_but_keeps_the_policy(users_node):
    alice = client(users_node, ALICE)
    alice.create_bucket(Bucket="locked")
    alice.put_object(Bucket="locked", Key="k", Body=b"v")
    alice.put_bucket_policy(
        Bucket="locked",
        Policy=policy({"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
                       "Resource": "arn:aws:s3:::locked/*"}),
    )  # fmt: skip
    assert code(lambda: alice.delete_object(Bucket="locked", Key="k")) == "AccessDenied"
    assert alice.get_object(Bucket="locked", Key="k")["Body"].read() == b"v"
    alice.delete_bucket_policy(Bucket="locked")  # policy management stays the owner's
    alice.delete_object(Bucket="locked", Key="k")
    users_node.client().delete_object(Bucket="locked", Key="k")  # the root: unbound anyway


def test_bad_policies_are_refused_and_change_nothing(users_node):
    alice = client(users_node, ALICE)
    alice.create_bucket(Bucket="strict")
    good = policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                   "Resource": "arn:aws:s3:::strict/*"})  # fmt: skip
    alice.put_bucket_policy(Bucket="strict", Policy=good)
    for bad in (
        "not json",
        json.dumps({"Statement": []}),
        policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::other-bucket/*"}),
        policy({"Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::strict/*"}),
        policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::strict/*", "Unknown": 1}),
        "{" + " " * 21000 + "}",
    ):  # fmt: skip
        assert code(lambda b=bad: alice.put_bucket_policy(Bucket="strict", Policy=b)) == (
            "MalformedPolicy"
        )
    assert json.loads(alice.get_bucket_policy(Bucket="strict")["Policy"]) == json.loads(good)


def test_deleting_a_bucket_deletes_its_policy_and_owner(users_node):
    alice, bob = client(users_node, ALICE), client(users_node, BOB)
    alice.create_bucket(Bucket="reused")
    alice.put_bucket_policy(
        Bucket="reused",
        Policy=policy({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": "arn:aws:s3:::reused/*"}),
    )  # fmt: skip
    alice.delete_bucket(Bucket="reused")
    bob.create_bucket(Bucket="reused")  # the name is free again, and bob's now
    assert code(lambda: bob.get_bucket_policy(Bucket="reused")) == "NoSuchBucketPolicy"
    assert code(lambda: alice.list_objects_v2(Bucket="reused")) == "AccessDenied"


def test_sighup_reloads_the_users(users_node, tmp_path):
    carol = client(users_node, CAROL)
    assert code(lambda: carol.list_buckets()) == "InvalidAccessKeyId"
    users_node.config_path.write_text(config_text(tmp_path, ALICE, BOB, CAROL))
    (tmp_path / "bob.secret").write_text("bob-rotated-secret\n")
    os.kill(users_node.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while code(lambda: carol.list_buckets()) != "ok":
        assert time.monotonic() < deadline, "carol not loaded after SIGHUP"
        time.sleep(0.2)
    assert code(lambda: client(users_node, BOB).list_buckets()) == "SignatureDoesNotMatch"
    assert (
        code(lambda: client(users_node, ("bob-key", "bob-rotated-secret")).list_buckets()) == "ok"
    )
