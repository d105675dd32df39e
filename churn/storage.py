"""Where the data directory lives: a local folder (the embedded default) or an S3 bucket prefix.

Every path of the data directory is a path object: ``pathlib.Path`` for a local folder and
``upath.UPath`` (fsspec's s3fs underneath) for ``s3://bucket/prefix``, so joining, listing and
reading read the same in both. What differs is publishing (no rename on S3) and handing a path to
a library that wants a real file or its own filesystem: that is this module and ``churn.io``.

Consistency relied on (S3 since December 2020, and MinIO, Ceph RGW and moto): a PUT or a
server-side COPY makes one whole object visible at once, and reads and listings after it see it
(strong read-after-write). Nothing relies on a multi-object transaction: whatever must change as a
group is published object by object, then made current by one small pointer object written last
(the registry's ``production``, ``drift/latest.json``) or read only by the next step of the chain.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:  # imported where used: settings import this module, in the drift env too
    import duckdb
    import pyarrow as pa

DataPath: TypeAlias = Any
"""A ``pathlib.Path`` or an ``upath.UPath``: what ``Settings.data_dir`` and ``DataLayout`` hand out."""

REMOTE_SCHEMES = ("s3",)


def is_remote(path: DataPath) -> bool:
    """True for object-store paths (anything but a plain local ``Path``)."""
    return not isinstance(path, Path)


def data_path(text: str, s3_endpoint_url: str = "") -> DataPath:
    """Parse a ``CHURN_*_DIR`` value: a local folder, or ``s3://bucket/prefix`` (nothing else)."""
    if "://" not in text:
        return Path(text).expanduser().resolve()
    scheme = text.split("://", 1)[0].lower()
    if scheme not in REMOTE_SCHEMES:
        raise ValueError(f"unsupported storage URL {text!r}: use a local folder or s3://bucket/prefix")
    from upath import UPath

    bucket = text.split("://", 1)[1].split("/", 1)[0]
    if not bucket:
        raise ValueError(f"storage URL {text!r} names no bucket: use s3://bucket/prefix")
    # No listing cache: other pods publish new versions and partitions, and a long-running API
    # must see them on its next look, not when a cached listing happens to expire.
    options: dict[str, Any] = {"use_listings_cache": False}
    if s3_endpoint_url:
        options["endpoint_url"] = s3_endpoint_url
    return UPath(text.rstrip("/"), **options)


def fs_path(path: DataPath) -> str:
    """The path as its own filesystem names it (``bucket/key`` for S3, the local path otherwise)."""
    return path.path if is_remote(path) else str(path)


def spark_uri(path: DataPath | str) -> str:
    """The path as Spark's Hadoop filesystems name it: an S3 object through ``s3a://`` (the
    hadoop-aws connector; Hadoop has no ``s3://``), a local path as it is."""
    text = str(path)
    return "s3a://" + text[len("s3://") :] if text.startswith("s3://") else text


def duckdb_connect(*roots: DataPath, config: Mapping[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read and write under ``roots`` (local or object storage),
    opened with DuckDB ``config`` (a batch step's: ``Settings.duckdb_config``).

    DuckDB names its spill files alike in every instance, so two processes spilling into one
    ``temp_directory`` would overwrite each other's: each connection spills into a folder of its
    own under it (:func:`spill_folders`), which DuckDB creates only when it spills and removes on
    close. A killed step's stays behind as a ``.tmp-`` leftover: housekeeping's sweep of the data
    dir removes it once stale where the scratch is the data dir; a pod's scratch goes with the pod."""
    import duckdb

    config = dict(config or {})
    if "temp_directory" in config:
        parent = Path(config["temp_directory"])
        parent.mkdir(parents=True, exist_ok=True)  # DuckDB creates only the last folder
        config["temp_directory"] = str(parent / f"{_spill_prefix()}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    con = duckdb.connect(config=config)
    remote = [r for r in roots if is_remote(r)]
    if remote:
        enable_object_storage(con, remote[0])
    return con


def _spill_prefix() -> str:
    from churn.io import TMP_PREFIX  # churn.io builds on this module

    return f"{TMP_PREFIX}duckdb-"


def spill_folders(root: Path) -> list[Path]:
    """The DuckDB spill folders of the connections :func:`duckdb_connect` opened over ``root``."""
    return sorted(root.glob(f"{_spill_prefix()}*")) if root.is_dir() else []


def enable_object_storage(con: Any, root: DataPath) -> None:
    """Give a DuckDB connection S3 access for ``root``: DuckDB's own httpfs extension, installed
    from the ``duckdb-extension-httpfs`` wheel (never downloaded: air-gapped clusters cannot) and
    an S3 secret built from the standard AWS credential chain and the configured endpoint.

    httpfs rather than DuckDB reading through the fsspec filesystem registered with it: measured
    an order of magnitude faster (README), since it fetches ranges in parallel outside Python.
    """
    con.execute("SET autoinstall_known_extensions = false")
    con.execute(f"INSTALL '{_sql_text(httpfs_extension())}'")  # into DuckDB's extension folder, once
    con.execute("LOAD httpfs")
    con.execute(s3_secret_sql(root))


def httpfs_extension() -> str:
    """The httpfs extension file the ``duckdb-extension-httpfs`` wheel ships for this DuckDB."""
    import duckdb

    try:
        import duckdb_extension_httpfs
    except ImportError:
        raise RuntimeError(
            "object storage needs DuckDB's httpfs extension: install duckdb-extension-httpfs "
            f"=={duckdb.__version__} (requirements/main.txt pins it)"
        ) from None
    folder = Path(duckdb_extension_httpfs.__file__).parent
    found = sorted(folder.rglob(f"v{duckdb.__version__}/**/httpfs.duckdb_extension")) or sorted(
        folder.rglob(f"v{duckdb.__version__}/httpfs.duckdb_extension")
    )
    if not found:
        raise RuntimeError(f"duckdb-extension-httpfs holds no httpfs extension for DuckDB {duckdb.__version__}")
    return str(found[0])


def s3_secret_sql(root: DataPath) -> str:
    """``CREATE SECRET`` for ``root``'s bucket: credentials and region resolved the standard AWS
    way (environment, profile, web identity: botocore's chain, as s3fs does), the endpoint from
    ``CHURN_S3_ENDPOINT_URL`` (path-style addressing, as MinIO and Ceph expect) or AWS's."""
    import os
    from urllib.parse import urlparse

    import botocore.session

    session = botocore.session.get_session()
    region = session.get_config_variable("region") or "us-east-1"
    parts = ["TYPE s3", f"REGION '{_sql_text(region)}'"]
    creds = session.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        parts += [f"KEY_ID '{_sql_text(frozen.access_key)}'", f"SECRET '{_sql_text(frozen.secret_key)}'"]
        if frozen.token:
            parts.append(f"SESSION_TOKEN '{_sql_text(frozen.token)}'")
    endpoint = root.storage_options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint:
        url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        parts += [
            f"ENDPOINT '{_sql_text(url.netloc)}'",
            "URL_STYLE 'path'",
            f"USE_SSL {'false' if url.scheme == 'http' else 'true'}",
        ]
    return f"CREATE OR REPLACE SECRET churn_s3 ({', '.join(parts)})"


def _sql_text(value: str) -> str:
    return str(value).replace("'", "''")


def read_table(path: DataPath, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file (or a local folder of them) as an Arrow table."""
    import pyarrow.parquet as pq

    if is_remote(path):
        with path.open("rb") as fh:
            return pq.read_table(fh, columns=columns)
    return pq.read_table(path, columns=columns)


def read_schema(path: DataPath) -> pa.Schema:
    import pyarrow.parquet as pq

    if is_remote(path):
        with path.open("rb") as fh:
            return pq.read_schema(fh)
    return pq.read_schema(path)


def sha256(path: DataPath) -> str:
    """Hex SHA-256 of a file's content, read in chunks (model files, landing files)."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def signature(path: DataPath) -> str | None:
    """Changes whenever the object is replaced (ETag on S3; inode, mtime and size locally);
    ``None`` when it does not exist. What the API's pollers compare, cheaply, every few seconds."""
    try:
        return _signature(path)
    except FileNotFoundError:
        return None


def _signature(path: DataPath) -> str:
    if is_remote(path):
        info = path.fs.info(fs_path(path))
        return str(info.get("ETag") or info.get("etag") or info.get("size"))
    st = path.stat()
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
