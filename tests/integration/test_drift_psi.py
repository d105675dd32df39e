"""The PSI side of drift detection in the main env: importing it pulls in no alibi-detect (checked in a
fresh interpreter, so nothing imported earlier in the session hides or fakes the answer). PSI's own
properties are unit-tested in tests/unit/test_psi.py."""

from __future__ import annotations

import subprocess
import sys

from tests.support.env import REPO


def test_main_env_modules_do_not_import_alibi() -> None:
    code = (
        "import sys, jobs.drift.psi, jobs.drift.launch; "
        "bad = [m for m in sys.modules if m.startswith(('alibi_detect', 'scipy', 'jobs.drift.detect'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
