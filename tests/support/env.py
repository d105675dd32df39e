"""Where the checkout is, whether this is CI, and what to do when a prerequisite is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

from churn.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    """True when ``CI`` is set to anything but an explicit no (``""``, ``0``, ``false``, ``no``, ``off``)."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no", "off"}


def skip_or_fail(reason: str) -> NoReturn:
    """A missing prerequisite: fails the test under CI, skips it (with the reason) elsewhere."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: this test must run)")
    pytest.skip(reason)


def require_tool(name: str, hint: str = "run `make tools` and put $TOOLS_DIR/bin on PATH") -> str:
    """Path of an executable on PATH, else :func:`skip_or_fail`."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} not found on PATH: {hint}")
    return path


def require_drift_env(settings: Settings) -> Path:
    """The isolated drift env's python, else :func:`skip_or_fail`."""
    python = settings.drift_python_path
    if not python.exists():
        skip_or_fail(f"drift env missing ({python}): run `make setup-drift`")
    return python
