"""An S3 API for integration tests: moto's standalone server (``moto_server``) on a free loopback
port, started as a real HTTP server the platform talks to with its own S3 client. Unit tests must
not use this (it starts a process)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from churn.settings import Settings
from tests.support.env import skip_or_fail
from tests.support.servers import HOST, free_port, port_open

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "churn-test",
    "AWS_SECRET_ACCESS_KEY": "churn-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
"""Credentials the standard AWS way (environment); moto accepts any."""


class S3Server:
    """``moto_server`` on 127.0.0.1; ``endpoint`` is its URL, ``bucket()`` makes a fresh bucket."""

    def __init__(self) -> None:
        exe = Path(sys.executable).with_name("moto_server")
        self.cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [*self.cmd, "-H", HOST, "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start on port {self.port}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)

    def bucket(self, prefix: str = "churn") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.filesystem().mkdir(name)
        return name


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """A running S3 API with the AWS variables set for this process (and its children)."""
    if shutil.which("moto_server", path=str(Path(sys.executable).parent)) is None:
        skip_or_fail("moto_server not installed (requirements/dev.txt: moto[server])")
    server = S3Server()
    old = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_settings(server: S3Server, bucket: str, scratch: Path, **fields: Any) -> Settings:
    """Settings on ``s3://bucket/site`` through ``server``; node-local files under ``scratch``."""
    values = {
        "CHURN_DATA_DIR": f"s3://{bucket}/site",
        "CHURN_S3_ENDPOINT_URL": server.endpoint,
        "CHURN_LOCAL_DIR": str(scratch),
        "CHURN_FRESHNESS_MAX_HOURS": "0",
    }
    values.update({f"CHURN_{k.upper()}": str(v) for k, v in fields.items() if v is not None})
    return Settings.from_env(env=values)


S3A_JARS = ("hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar")
S3A_COMPAT = (
    # hadoop-aws 3.3.1 reads these as plain numbers; Hadoop 3.5's defaults (pyspark's) are durations
    "spark.hadoop.fs.s3a.threads.keepalivetime=60",
    "spark.hadoop.fs.s3a.connection.establish.timeout=30000",
    "spark.hadoop.fs.s3a.connection.timeout=200000",
    "spark.hadoop.fs.s3a.multipart.purge.age=86400",
    # and its credential chain names AWS SDK v2 classes, which the 1.x bundle does not have
    "spark.hadoop.fs.s3a.aws.credentials.provider=com.amazonaws.auth.EnvironmentVariableCredentialsProvider",
)


def s3a_spark_conf() -> str:
    """``CHURN_SPARK_CONF`` items that give a Spark session the s3a:// filesystem: the hadoop-aws jars
    ``make tools`` extracts (the only hadoop-aws on a registry these machines reach, built for Hadoop
    3.3; a cluster uses the one matching its Spark, README "Scale"), on the driver's class path."""
    root = Path(os.environ.get("TOOLS_DIR", Path.home() / ".cache" / "churn-platform" / "tools")) / "spark-jars"
    jars = [root / name for name in S3A_JARS]
    if not all(j.exists() for j in jars):
        skip_or_fail(f"the s3a jars are not in {root}: run `make tools`")
    return ",".join([f"spark.driver.extraClassPath={':'.join(map(str, jars))}", *S3A_COMPAT])
