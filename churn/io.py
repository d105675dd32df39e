"""Crash-safe writers: every output is written to a temporary sibling, checked, then renamed.

A reader therefore sees either the previous complete output or the new complete one, never a
half-written file, and a failed or killed job leaves yesterday's outputs untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_dir(final: Path, validate: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary directory; on success validate it and swap it in for ``final``."""
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


def replace_dir(src: Path, final: Path) -> None:
    """Swap ``src`` in for ``final``; the old directory is removed only after the swap."""
    old = None
    if final.exists():
        old = final.with_name(f"{TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.rename(src, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file for writing; it replaces ``final`` only if the block succeeds."""
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


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_file(final, "w") as fh:
        fh.write(text)


def write_json_atomic(final: Path, obj: Any) -> None:
    write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet_atomic(final: Path, df: pd.DataFrame | pa.Table) -> None:
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    try:
        pq.write_table(table, tmp, compression="zstd")
        pq.read_metadata(tmp)  # a truncated file fails here, before it can replace good data
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def clean_tmp(root: Path, older_than_s: float = 0.0) -> int:
    """Remove leftovers of killed writers (``.tmp-*``) under ``root``; returns how many.

    ``older_than_s`` spares younger ones: on a shared volume another pod's writer may be
    mid-write, and only age tells a live temp file from a dead one.
    """
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


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
