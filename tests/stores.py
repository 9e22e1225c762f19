"""The shared stores the tests run the Files and Videos APIs on: a throwaway PostgreSQL cluster and moto's S3.

Both run on loopback on free ports, one per test session; each test gets its own database
and its own key prefix, so tests never see each other's rows or objects.
"""

from __future__ import annotations

import glob
import os
import queue
import secrets
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from openai_frontend.settings import Settings

#: The store combinations the Files and Videos API tests run on.
STORES = ["local", "s3", "postgres", "postgres+s3"]
BUCKET = "vlt-tests"
_PG_USER = "postgres"  # the superuser initdb creates (and, as root, the OS user that runs the cluster)


def pg_bin() -> Path:
    """The directory of Debian's initdb/pg_ctl (or $PATH's); a failure saying to run setup when missing."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        pytest.fail("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
                    "run `make setup`, which installs Debian's postgresql")
    return Path(versions[-1]).parent


class PostgresCluster:
    """initdb + pg_ctl on a temp dir: a free loopback port, its unix socket in the temp dir, fsync off.

    A ``CREATE DATABASE`` takes ~0.25 s here (it copies the template), and hundreds of tests each want a new
    database: a thread keeps :data:`DATABASES_AHEAD` of them made in advance, on the core a test leaves idle."""

    #: Empty databases kept ready by the background thread.
    DATABASES_AHEAD = 6

    def __init__(self) -> None:
        from video_pipeline.launch import free_port

        self.bin = pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="vlt-pg-"))
        self.port = free_port()
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # initdb refuses root: the cluster runs as the postgres user
            import pwd

            try:
                pw = pwd.getpwnam(_PG_USER)
            except KeyError:
                pytest.fail("the tests run as root but there is no postgres user: run `make setup`")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self._made: queue.Queue[str] = queue.Queue()
        self._room = threading.Semaphore(self.DATABASES_AHEAD)
        self._closing = threading.Event()
        self._maker: threading.Thread | None = None

    def start(self) -> None:
        data, log = self.dir / "data", self.dir / "server.log"
        if not data.exists():
            self._run("initdb", "-D", str(data), "-U", _PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off -c max_connections=400")
        try:
            self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
        except subprocess.CalledProcessError:
            print(log.read_text() if log.exists() else "(no server log)")
            raise
        if self._maker is None:
            self._maker = threading.Thread(target=self._make_databases, name="pg-databases-ahead", daemon=True)
            self._maker.start()

    def pause(self) -> None:
        """Stop the server, keeping its data (a database outage)."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self.start()

    def stop(self) -> None:
        self._closing.set()
        self._room.release()  # a maker waiting for room sees the flag
        subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False, **self._as)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database (made ahead of time; waits while the server is paused)."""
        try:
            name = self._made.get(timeout=120)
        except queue.Empty:
            pytest.fail("no new PostgreSQL database within 120 s: is the cluster down? (see its server.log)")
        self._room.release()
        return self.url(name)

    def _make_databases(self) -> None:
        import psycopg

        while True:
            self._room.acquire()
            while not self._closing.is_set():
                name = "t_" + secrets.token_hex(6)
                try:
                    with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
                        conn.execute(f"CREATE DATABASE {name}")
                except psycopg.Error:  # paused (an outage test), or stopping: try again shortly
                    self._closing.wait(0.2)
                    continue
                self._made.put(name)
                break
            if self._closing.is_set():
                return

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bin / tool), *args], check=True, capture_output=True, timeout=120, **self._as)


class S3Server:
    """moto's S3 in a thread on a free loopback port, with one bucket; AWS credentials set for the session."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._env = pytest.MonkeyPatch()

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                           ("AWS_DEFAULT_REGION", "us-east-1")):
            self._env.setenv(key, value)
        self._env.delenv("AWS_PROFILE", raising=False)
        self.client().create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        self._server.stop()
        self._env.undo()

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.url, region_name="us-east-1")


def store_settings(kind: str, base: Settings, request: pytest.FixtureRequest) -> Settings:
    """``base`` on the stores ``kind`` names (one of :data:`STORES`), fresh ones for this test."""
    changes: dict[str, Any] = {}
    if "postgres" in kind:
        changes["database_url"] = request.getfixturevalue("postgres").new_database()
    if "s3" in kind:
        s3: S3Server = request.getfixturevalue("s3_server")
        changes.update(files_backend="s3", s3_bucket=BUCKET, s3_endpoint_url=s3.url,
                       s3_prefix=f"t{secrets.token_hex(6)}/")
    return base.with_(**changes)


def stored_blobs(settings: Settings) -> list[str]:
    """The sha256 of every blob the Files API keeps (in files_dir or in the bucket)."""
    if settings.files_backend == "s3":
        return sorted(k.rsplit("/", 1)[1] for k in _keys(settings, "blobs/"))
    root = Path(settings.files_dir) / "blobs"
    return sorted(p.parent.name + p.name for p in root.rglob("*") if p.is_file())


def vanish_blobs(settings: Settings) -> None:
    """Remove every blob behind the store's back (a lost disk, a bucket emptied by hand)."""
    if settings.files_backend == "s3":
        client = _client(settings)
        for key in _keys(settings, ""):
            client.delete_object(Bucket=BUCKET, Key=key)
    for blob in Path(settings.files_dir).rglob("*"):
        if blob.is_file() and blob.parent.parent.name in ("blobs", "s3-cache"):
            blob.unlink()


def _client(settings: Settings) -> Any:
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")


def _keys(settings: Settings, under: str) -> list[str]:
    pages = _client(settings).get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                        Prefix=settings.s3_prefix + under)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]
