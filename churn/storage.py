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


def duckdb_connect(*roots: DataPath) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read and write under ``roots`` (local or object storage).

    Object storage goes through the same fsspec filesystem as every other read (registered with
    DuckDB), not DuckDB's httpfs extension: that extension is downloaded at run time, which
    air-gapped clusters cannot do, and it would need the credentials and endpoint configured twice.
    """
    import duckdb

    con = duckdb.connect()
    registered: set[str] = set()
    for root in roots:
        if is_remote(root) and root.protocol not in registered:
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            con.register_filesystem(root.fs)
            registered.add(root.protocol)
    return con


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
