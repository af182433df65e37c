"""shardfleet.testing, the fixture users import: a real node (or dev cluster) on free ports
with temporary drives, a clean slate on demand, and the pytest plugin `pip install`
registers, used from a project with no conftest at all."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shardfleet.testing import S3Server, serve, serve_async


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_starts_a_real_node_and_cleans_up():
    with serve() as server:
        assert isinstance(server, S3Server) and server.endpoint.startswith("http://127.0.0.1:")
        s3 = server.client()
        s3.create_bucket(Bucket="fixture")
        s3.put_object(Bucket="fixture", Key="a/b", Body=b"x" * 300_000)
        uid = s3.create_multipart_upload(Bucket="fixture", Key="big")["UploadId"]
        s3.upload_part(Bucket="fixture", Key="big", UploadId=uid, PartNumber=1, Body=b"p")
        server.reset(keep_buckets=True)
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["fixture"]
        assert s3.list_objects_v2(Bucket="fixture")["KeyCount"] == 0
        assert "Uploads" not in s3.list_multipart_uploads(Bucket="fixture")
        server.reset()
        assert s3.list_buckets()["Buckets"] == []
        data, pids = server.data, server.pids
    assert data is not None and not data.exists()
    assert not any(alive(p) for p in pids)


def test_serve_reports_a_node_that_cannot_start(tmp_path):
    with pytest.raises(RuntimeError, match="did not start"), serve(ec="9+9", data=tmp_path):
        pass
    assert tmp_path.exists()  # a caller's directory is kept


async def test_serve_async():
    async with serve_async() as server:
        s3 = server.client()
        await asyncio.to_thread(s3.create_bucket, Bucket="async-fixture")
        names = [b["Name"] for b in (await asyncio.to_thread(s3.list_buckets))["Buckets"]]
        assert names == ["async-fixture"]
        pid = server.pids[0]
    assert not alive(pid)


def test_serve_a_dev_cluster():
    with serve(nodes=2) as server:
        assert len(server.endpoints) == 2
        server.client(0).create_bucket(Bucket="both")
        server.client(0).put_object(Bucket="both", Key="k", Body=b"through one")
        assert server.client(1).get_object(Bucket="both", Key="k")["Body"].read() == b"through one"
        pids = server.pids
    assert len(pids) == 2 and not any(alive(p) for p in pids)


def test_the_pytest_plugin_needs_no_conftest(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_app.py").write_text(
        textwrap.dedent(
            """
            def test_writes(shardfleet_s3):
                shardfleet_s3.create_bucket(Bucket="app")
                shardfleet_s3.put_object(Bucket="app", Key="k", Body=b"v")

            def test_starts_clean(shardfleet_s3):
                assert shardfleet_s3.list_buckets()["Buckets"] == []

            def test_session_client_keeps(shardfleet_s3_session, shardfleet_server):
                shardfleet_s3_session.create_bucket(Bucket="kept")
                assert shardfleet_server.endpoint.startswith("http://")
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    assert not list(Path(project).glob("conftest.py"))
