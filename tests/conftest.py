"""Session fixtures shared by every suite. Helpers live in tests/support (conftest files hold fixtures only)."""

from __future__ import annotations

import pytest

from churn.settings import Settings
from tests.support.sites import build_small_store


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """400 users × 120 days of synthetic data with daily feature tables built (read-only for tests)."""
    return build_small_store(tmp_path_factory.mktemp("small_store"))
