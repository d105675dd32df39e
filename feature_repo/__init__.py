"""Feast feature repository for churn-platform (definitions only)."""
