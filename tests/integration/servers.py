"""Moved to tests/support (servers, metrics, sites).

TODO(test-helpers): remove once tests/integration/test_rollout.py imports tests.support
"""

from tests.support.metrics import metric, metrics_of
from tests.support.servers import create, live_server
from tests.support.sites import build_served_site

__all__ = ["build_served_site", "create", "live_server", "metric", "metrics_of"]
