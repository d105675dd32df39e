"""``benchmarks/scale.py``'s verdicts: which resource a size runs out of first, read off its figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("scale", Path(__file__).parents[2] / "benchmarks" / "scale.py")
scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale)


def _result(users: int, rss_mb: float, data_mb: float, seconds: float, spill_mb: float = 0.0) -> dict:
    step = {"seconds": seconds, "peak_rss_mb": rss_mb, "spill_mb": spill_mb, "data_mb": data_mb, "redis_mb": 0.0}
    return {"users": users, "steps": dict.fromkeys(scale.STEPS, step)}


RESULTS = [_result(100_000, 1_000, 500, 10.0), _result(1_000_000, 10_000, 5_000, 100.0)]


def _verdict(lines: list[str], step: str = "aggregate") -> str:
    return next(line for line in lines if line.startswith(f"| {step} |")).rsplit("|", 2)[1].strip()


@pytest.mark.parametrize(
    ("text", "mib"), [("", None), ("512MiB", 512.0), ("1.5GiB", 1536.0), ("128MB", 128e6 / 2**20), ("4gb", 4e9 / 2**20)]
)
def test_sizes_read_as_duckdb_reads_them(text, mib):
    assert scale.size_mb(text) == mib


def test_uncapped_memory_runs_out_first():
    lines = scale.project(RESULTS, 10_000_000, memory_mb=24_000, disk_mb=1e9, budget_min=15)
    assert _verdict(lines) == "memory runs out first"
    assert "1,000 s" in lines[1]  # linear growth from the largest size


def test_capped_the_excess_spills_and_the_disk_decides():
    # 100 GB of memory wanted, 10 GB cap: 90 GB spill beside a 50 GB data directory
    lines = scale.project(RESULTS, 10_000_000, memory_mb=24_000, disk_mb=120_000, budget_min=15, duckdb_limit_mb=10_000)
    assert _verdict(lines) == "disk runs out first (data directory + DuckDB's spill)"
    lines = scale.project(RESULTS, 10_000_000, memory_mb=24_000, disk_mb=200_000, budget_min=15, duckdb_limit_mb=10_000)
    assert _verdict(lines) == "fits, spilling past DuckDB's limit"


def test_the_cap_spills_only_what_duckdb_holds():
    # scoring's rows are pandas' and LightGBM's: past the machine's memory it runs out, cap or not
    lines = scale.project(RESULTS, 10_000_000, memory_mb=24_000, disk_mb=200_000, budget_min=15, duckdb_limit_mb=10_000)
    assert _verdict(lines, "score") == "memory runs out first"
    assert "≥ 0 MB" in next(line for line in lines if line.startswith("| score |"))


def test_small_sizes_fit_and_the_loop_is_timed_against_the_budget():
    lines = scale.project(RESULTS, 1_000_000, memory_mb=24_000, disk_mb=1e9, budget_min=15)
    assert _verdict(lines) == "fits in memory and disk"
    assert lines[-1].endswith("fits in 15 min |")  # five steps of 100 s


@pytest.mark.parametrize(
    ("code", "stderr", "resource"),
    [
        (1, "duckdb.IOException: IO Error: No space left on device", "disk ran out first"),
        (1, "duckdb.OutOfMemoryException: failed to allocate", "memory ran out first"),
        (-9, "", "memory ran out first, most likely"),
        (-15, "", "not a resource: stopped by SIGTERM"),
        (1, "ValueError: bad", "not a resource: the error follows"),
    ],
)
def test_a_failed_set_up_names_what_ran_out(code, stderr, resource):
    assert scale.SetupFailed(3_000_000, code, stderr).resource.startswith(resource)
