"""Batch jobs that run outside the API: drift detection (isolated env), scoring, monitoring, retraining."""
