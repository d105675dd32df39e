"""Run the drift job in its isolated environment from the main one (``churn drift``).

alibi-detect pins numpy<2 and cannot share a venv with Feast, so the main env never imports it:
it starts ``<drift python> -m jobs.drift`` as a child process with a minimal environment (PATH,
HOME, PYTHONPATH pointing at the code, and the settings as ``CHURN_*`` variables) and passes its
exit status through (0 no drift, 3 drift, 1 error). Never imports numpy, pandas or alibi.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from churn.errors import JobError

if TYPE_CHECKING:
    from churn.settings import Settings

_CODE_ROOT = Path(__file__).resolve().parents[2]
# Packages the drift job imports: churn.settings imports feature_repo (definitions only).
_PACKAGES = ("churn", "jobs", "feature_repo")


class DriftEnvMissing(JobError):
    """The isolated drift interpreter does not exist (printed as one line by ``user_errors``)."""


@contextlib.contextmanager
def _code_path() -> Iterator[Path]:
    """A directory holding only our packages, to put on the child's PYTHONPATH.

    In a source checkout that is the checkout itself. In an installed package the parent is the
    main env's site-packages, which must not leak into the drift env (numpy 2, Feast...), so a
    temporary directory of symlinks to just our packages is used instead.
    """
    if (_CODE_ROOT / "pyproject.toml").exists():
        yield _CODE_ROOT
        return
    with tempfile.TemporaryDirectory(prefix="churn-drift-code-") as tmp:
        for name in _PACKAGES:
            if (_CODE_ROOT / name).is_dir():
                os.symlink(_CODE_ROOT / name, Path(tmp) / name)
        yield Path(tmp)


def drift_command(settings: Settings, date: dt.date | str, exit_zero: bool = False) -> list[str]:
    day = date.isoformat() if isinstance(date, dt.date) else str(date)
    cmd = [str(settings.drift_python_path), "-m", "jobs.drift", "--date", day]
    if exit_zero:
        cmd.append("--exit-zero")
    return cmd


def run_drift(settings: Settings, date: dt.date | str, exit_zero: bool = False) -> int:
    """Run the drift job for ``date`` in the drift env; stream its output; return its exit code.

    Raises :class:`DriftEnvMissing` (with the fix) if the drift interpreter does not exist.
    """
    python = settings.drift_python_path
    if not Path(python).exists():
        raise DriftEnvMissing(
            f"drift environment not found: {python} does not exist; run `make setup-drift` "
            "(or set CHURN_DRIFT_PYTHON to its interpreter)"
        )
    with _code_path() as code:
        env = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR") if k in os.environ}
        # An s3:// data dir: the child finds its credentials the standard AWS way too.
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        env.update(settings.as_env())
        env["PYTHONPATH"] = str(code)
        env["PYTHONUNBUFFERED"] = "1"  # stream lines as they come
        sys.stdout.flush()
        sys.stderr.flush()
        # The child inherits our stdout/stderr, so its output streams straight through. cwd is the
        # code root: `-m` puts the cwd first on sys.path, and a stray ./jobs must not shadow ours.
        proc = subprocess.run(drift_command(settings, date, exit_zero), env=env, cwd=code, check=False)
    return proc.returncode
