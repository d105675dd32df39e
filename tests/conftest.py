"""Session fixtures shared by every suite. Helpers live in tests/support (conftest files hold fixtures only)."""

from __future__ import annotations

import pytest

from churn.settings import Settings
from tests.support.settings import make_settings  # noqa: F401  (re-export, see the TODO)
from tests.support.sites import build_small_store

# TODO(test-helpers): remove the make_settings re-export above once tests/unit/test_registry.py and
# tests/unit/test_rollout.py import tests.support


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """400 users × 120 days of synthetic data with daily feature tables built (read-only for tests)."""
    return build_small_store(tmp_path_factory.mktemp("small_store"))
