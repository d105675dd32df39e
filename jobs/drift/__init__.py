"""Drift detection: PSI + alibi-detect TabularDrift in the isolated ``.venv-drift`` environment.

Only :mod:`jobs.drift.psi` (numpy/pandas) and :mod:`jobs.drift.launch` (stdlib) are imported by
the main environment; :mod:`jobs.drift.detect` and :mod:`jobs.drift.report` need the drift env.
"""
