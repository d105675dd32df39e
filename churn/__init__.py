"""churn-platform: shared settings, CLI and small I/O helpers used by every lifecycle stage."""

__version__ = "0.1.0"
