"""Crash-safe writers: every output is written to a temporary place, checked, then published.

Locally the temporary place is a sibling and publishing is a rename; on object storage
(``churn.storage``) it is a ``.tmp-`` object beside the final key and publishing is a server-side
copy onto the final key (one PUT-like, all-or-nothing step) and the removal of the temporary one.
A reader therefore sees either the previous complete object or the new complete one, never a
half-written one, and a failed or killed job leaves yesterday's outputs untouched (its ``.tmp-``
leftovers are removed by ``clean_tmp``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn.storage import DataPath, fs_path, is_remote

TMP_PREFIX = ".tmp-"


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_dir(final: DataPath, validate: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary local directory; on success validate it and swap it in for ``final``."""
    if is_remote(final):
        with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as staged:
            yield Path(staged)
            if validate is not None:
                validate(Path(staged))
            replace_dir(Path(staged), final)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        if validate is not None:
            validate(tmp)
        _fsync_tree(tmp)
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staging_dir(near: DataPath) -> Iterator[Path]:
    """A local scratch folder for outputs bound for ``near``; removed on exit, whatever happens.

    Locally it is a ``.tmp-`` folder inside ``near`` (the same filesystem, so ``replace_dir`` of its
    entries is a rename); for object storage a temporary local folder (publishing uploads).
    """
    if is_remote(near):
        with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
            yield Path(tmp)
        return
    near.mkdir(parents=True, exist_ok=True)
    tmp = near / f"{TMP_PREFIX}staging-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def shared_staging_dir(near: DataPath) -> Iterator[DataPath]:
    """A staging folder for outputs a cluster engine writes (Spark's executors), removed on exit.

    Unlike ``staging_dir`` it lives beside ``near`` on ``near``'s own storage, a ``.tmp-`` prefix
    on object storage too: every worker can write there, where a local temporary folder would be
    on one machine only. Publish its folders with ``replace_dirs``.
    """
    if not is_remote(near):
        with staging_dir(near) as tmp:
            yield tmp
        return
    tmp = near / f"{TMP_PREFIX}staging-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
    finally:
        remove_tree(tmp)


def replace_dir(src: Path, final: DataPath) -> None:
    """Swap the local folder ``src`` in for ``final``; the old content goes only after the swap.

    On object storage the folder is uploaded under a ``.tmp-`` prefix and checked object by object
    (size), then each object is copied onto its final key and keys the new folder no longer has
    are removed: every object flips whole, the folder as a group does not (see ``churn.storage``).
    """
    if is_remote(final):
        replace_dirs([(src, final)])
        return
    old = None
    if final.exists():
        old = final.with_name(f"{TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.rename(src, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: DataPath, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file for writing; it replaces ``final`` only if the block succeeds."""
    if is_remote(final):
        with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as staged:
            local = Path(staged) / final.name
            with open(local, mode) as fh:
                yield fh
            publish_file(local, final)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(final: DataPath, text: str) -> None:
    with atomic_file(final, "w") as fh:
        fh.write(text)


def write_json_atomic(final: DataPath, obj: Any) -> None:
    write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet_atomic(final: DataPath, df: pd.DataFrame | pa.Table) -> None:
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    if is_remote(final):
        with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as staged:
            local = Path(staged) / final.name
            pq.write_table(table, local, compression="zstd")
            pq.read_metadata(local)
            publish_file(local, final)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    try:
        pq.write_table(table, tmp, compression="zstd")
        pq.read_metadata(tmp)  # a truncated file fails here, before it can replace good data
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def append_line(path: DataPath, line: str) -> None:
    """Append one line to a log (audit, retraining).

    Locally an ``O_APPEND`` write (atomic for a line, even with concurrent writers); an object
    cannot be appended to, so there the log is rewritten whole through ``atomic_file``: safe with
    the one writer the daily chain and the registry lock allow, and still never half-written.
    """
    if is_remote(path):
        old = path.read_text() if path.exists() else ""
        write_text_atomic(path, old + line.rstrip("\n") + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: DataPath, stale_after_s: float = 600.0, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold ``path`` as a lock: ``flock`` on a local file; on object storage an object created
    with a conditional PUT (``If-None-Match: *``), which exactly one writer wins.

    An object lock outlives a killed holder, so one older than ``stale_after_s`` is broken; a
    live one is waited for up to ``timeout_s`` (then ``TimeoutError``).
    """
    if not is_remote(path):
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    fs, key = path.fs, fs_path(path)
    deadline = time.monotonic() + timeout_s
    token = f"{os.getpid()}-{uuid.uuid4().hex}".encode()
    while True:
        try:
            with fs.open(key, "xb") as fh:
                fh.write(token)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                modified = fs.info(key).get("LastModified")
                if modified is not None and time.time() - modified.timestamp() > stale_after_s:
                    fs.rm_file(key)
                    continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} is held by another writer") from None
            time.sleep(0.2)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(key)


def publish_file(local: Path, final: DataPath) -> None:
    """Upload a finished local file to ``final`` (object storage): temporary key, check, copy."""
    fs = final.fs
    tmp = fs_path(final.with_name(f"{TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"))
    try:
        fs.put_file(str(local), tmp)
        _check_size(fs, tmp, local)
        fs.copy(tmp, fs_path(final))
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(tmp)


def _check_size(fs: Any, key: str, local: Path) -> None:
    size = fs.info(key)["size"]
    if size != local.stat().st_size:
        raise OSError(f"upload of {local.name} is incomplete ({size} of {local.stat().st_size} bytes)")


def replace_dirs(pairs: list[tuple[DataPath, DataPath]]) -> None:
    """``replace_dir`` for many folders at once (a feature view's partitions): one batch of
    concurrent uploads, one listing to check them and one of the old content, concurrent copies.

    The sources may also be folders already on the target's object storage (``shared_staging_dir``):
    then nothing is uploaded, the staged objects are copied onto their final keys the same way."""
    if not pairs:
        return
    if is_remote(pairs[0][0]):
        _swap_staged_dirs(pairs)
        return
    if not is_remote(pairs[0][1]):
        for src, final in pairs:
            replace_dir(src, final)
        return
    by_parent: dict[str, list[tuple[Path, DataPath]]] = {}
    for src, final in pairs:
        by_parent.setdefault(fs_path(final.parent), []).append((src, final))
    for group in by_parent.values():
        _publish_dirs(group)
    for src, _ in pairs:
        shutil.rmtree(src, ignore_errors=True)


def _publish_dirs(pairs: list[tuple[Path, DataPath]]) -> None:
    """Publish local folders to siblings under one parent prefix (see ``replace_dir``)."""
    fs = pairs[0][1].fs
    parent = fs_path(pairs[0][1].parent)
    staging = f"{parent}/{TMP_PREFIX}publish-{uuid.uuid4().hex[:8]}"
    local, staged, final = [], [], []
    for src, target in pairs:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                rel = p.relative_to(src).as_posix()
                local.append(p)
                staged.append(f"{staging}/{target.name}/{rel}")
                final.append(f"{fs_path(target)}/{rel}")
    try:
        if local:
            fs.put([str(p) for p in local], staged)
        sizes = {k: v["size"] for k, v in fs.find(staging, detail=True).items()} if local else {}
        for p, key in zip(local, staged, strict=True):
            if sizes.get(key) != p.stat().st_size:
                raise OSError(f"upload of {p.name} to {key} is incomplete")
        _copy_over(fs, parent, [t for _, t in pairs], staged, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(staging, recursive=True)


def _swap_staged_dirs(pairs: list[tuple[DataPath, DataPath]]) -> None:
    """Publish folders already staged on the targets' object storage (see ``replace_dir``)."""
    fs = pairs[0][1].fs
    for parent in {fs_path(final.parent) for _, final in pairs}:
        group = [(src, final) for src, final in pairs if fs_path(final.parent) == parent]
        staged, final = [], []
        for src, target in group:
            base = fs_path(src)
            for key in sorted(fs.find(base)):
                staged.append(key)
                final.append(f"{fs_path(target)}/{key[len(base) + 1 :]}")
        _copy_over(fs, parent, [t for _, t in group], staged, final)
    for src, _ in pairs:
        remove_tree(src)


def _copy_over(fs: Any, parent: str, targets: list[DataPath], staged: list[str], final: list[str]) -> None:
    """Copy staged objects onto their final keys, then drop the keys the new folders no longer have."""
    prefixes = tuple(f"{fs_path(target)}/" for target in targets)
    old = {k for k in fs.find(parent) if k.startswith(prefixes)}
    if staged:
        fs.copy(staged, final)
    stale = sorted(old - set(final))
    if stale:
        fs.rm(stale)


def remove_tree(path: DataPath) -> None:
    """Delete a folder (or prefix) and everything under it; absent is fine."""
    if is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            path.fs.rm(fs_path(path), recursive=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def clean_tmp(root: DataPath, older_than_s: float = 0.0) -> int:
    """Remove leftovers of killed writers (``.tmp-*``) under ``root``; returns how many.

    ``older_than_s`` spares younger ones: another pod's writer may be mid-write, and only age
    tells a live temporary object from a dead one.
    """
    if is_remote(root):
        return _clean_tmp_remote(root, older_than_s)
    if not root.exists():
        return 0
    cutoff = time.time() - older_than_s
    n = 0
    for p in list(root.rglob(f"{TMP_PREFIX}*")):
        try:
            if older_than_s > 0 and p.lstat().st_mtime >= cutoff:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        except FileNotFoundError:  # removed with its parent, or by another cleaner
            continue
        n += 1
    return n


def _clean_tmp_remote(root: DataPath, older_than_s: float) -> int:
    fs = root.fs
    base = fs_path(root)
    cutoff = time.time() - older_than_s
    doomed: set[str] = set()
    for key, info in fs.find(base, detail=True).items():
        parts = key[len(base) + 1 :].split("/")
        hit = next((i for i, part in enumerate(parts) if part.startswith(TMP_PREFIX)), None)
        if hit is None:
            continue
        modified = info.get("LastModified")
        if older_than_s > 0 and modified is not None and modified.timestamp() >= cutoff:
            continue
        doomed.add("/".join([base, *parts[: hit + 1]]))
    for key in sorted(doomed):
        with contextlib.suppress(FileNotFoundError):
            fs.rm(key, recursive=True)
    return len(doomed)


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
