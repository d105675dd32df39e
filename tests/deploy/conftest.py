"""Fixtures for the offline deployment checks (pytest -m deploy); helpers in tests/support/tools.py.

A missing tool FAILS the test under CI (CI=true) and skips it, with the reason, elsewhere.
"""

from __future__ import annotations

import pytest

from tests.support.tools import Rendered, render_cases


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    """`helm template` of every case, rendered once per session (in parallel)."""
    return render_cases()
