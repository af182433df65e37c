"""ACL reads and the private ACL, against a real node with boto3: every bucket and object
is private (the owner's FULL_CONTROL); setting private succeeds and changes nothing, any
other ACL is refused before anything changes."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


@pytest.fixture
def stored(s3):
    s3.create_bucket(Bucket="acls")
    s3.put_object(Bucket="acls", Key="k", Body=b"kept")
    return s3


def _is_private(acl: dict) -> None:
    owner = acl["Owner"]["ID"]
    assert owner
    assert acl["Grants"] == [
        {
            "Grantee": {"ID": owner, "DisplayName": acl["Owner"]["DisplayName"],
                        "Type": "CanonicalUser"},
            "Permission": "FULL_CONTROL",
        }
    ]  # fmt: skip


def test_bucket_and_object_acls_read_private(stored):
    _is_private(stored.get_bucket_acl(Bucket="acls"))
    _is_private(stored.get_object_acl(Bucket="acls", Key="k"))


def test_setting_private_succeeds_canned_or_as_a_body(stored):
    stored.put_bucket_acl(Bucket="acls", ACL="private")
    stored.put_object_acl(Bucket="acls", Key="k", ACL="private")
    policy = stored.get_object_acl(Bucket="acls", Key="k")
    policy.pop("ResponseMetadata")
    stored.put_object_acl(Bucket="acls", Key="k", AccessControlPolicy=policy)
    stored.put_bucket_acl(Bucket="acls", AccessControlPolicy=policy)
    assert stored.get_object(Bucket="acls", Key="k")["Body"].read() == b"kept"


def test_other_acls_are_refused_and_change_nothing(stored):
    owner = stored.get_bucket_acl(Bucket="acls")["Owner"]
    public = {
        "Owner": owner,
        "Grants": [
            {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
             "Permission": "READ"},
        ],
    }  # fmt: skip
    calls = [
        lambda: stored.put_bucket_acl(Bucket="acls", ACL="public-read"),
        lambda: stored.put_object_acl(Bucket="acls", Key="k", ACL="public-read-write"),
        lambda: stored.put_object_acl(Bucket="acls", Key="k", AccessControlPolicy=public),
        lambda: stored.put_bucket_acl(Bucket="acls", GrantRead="id=someone"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "NotImplemented"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    _is_private(stored.get_object_acl(Bucket="acls", Key="k"))
    assert stored.get_object(Bucket="acls", Key="k")["Body"].read() == b"kept"


def test_missing_bucket_and_key(stored):
    for call, code in [
        (lambda: stored.get_bucket_acl(Bucket="no-such-acls"), "NoSuchBucket"),
        (lambda: stored.get_object_acl(Bucket="acls", Key="nope"), "NoSuchKey"),
        (lambda: stored.put_object_acl(Bucket="acls", Key="nope", ACL="private"), "NoSuchKey"),
    ]:
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == code
