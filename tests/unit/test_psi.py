"""PSI properties (jobs.drift.psi is numpy/pandas only, so it runs in the main env; that it imports no
alibi-detect there is checked in a fresh interpreter by tests/integration/test_drift_psi.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobs.drift.psi import (
    EPSILON,
    MISSING,
    UNSEEN,
    CategoricalEncoder,
    NumericBins,
    categorical_psi,
    numeric_psi,
    psi_from_shares,
    psi_level,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240301)


def test_identical_sample_is_zero(rng: np.random.Generator) -> None:
    x = rng.normal(size=10_000)
    assert numeric_psi(x, x).psi == pytest.approx(0.0, abs=1e-12)
    cats = rng.choice(["a", "b", "c"], 10_000)
    assert categorical_psi(cats, cats).psi == pytest.approx(0.0, abs=1e-12)


def test_same_distribution_is_near_zero(rng: np.random.Generator) -> None:
    ref, cur = rng.normal(size=20_000), rng.normal(size=20_000)
    assert numeric_psi(ref, cur).psi < 0.01
    ref_c = rng.choice(["a", "b", "c"], 20_000, p=[0.5, 0.3, 0.2])
    cur_c = rng.choice(["a", "b", "c"], 20_000, p=[0.5, 0.3, 0.2])
    assert categorical_psi(ref_c, cur_c).psi < 0.01


def test_known_shift_gives_large_psi_growing_with_the_shift(rng: np.random.Generator) -> None:
    ref, cur = rng.normal(size=20_000), rng.normal(size=20_000)
    psis = [numeric_psi(ref, cur + shift).psi for shift in (0.0, 0.25, 0.5, 1.0)]
    assert psis == sorted(psis)
    assert psis[1] < 0.25  # a quarter standard deviation: warn territory at most
    assert psis[3] > 0.25 * 3  # one standard deviation: far beyond the alert threshold
    assert psi_level(psis[3], 0.1, 0.25) == "alert"


def test_psi_formula_from_shares() -> None:
    r, c = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.75, 0.0])
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi_from_shares(r, c) == pytest.approx(expected)  # empty-on-both-sides bin adds 0
    # an empty reference bin uses EPSILON, so PSI stays finite
    assert psi_from_shares(np.array([1.0, 0.0]), np.array([0.9, 0.1])) == pytest.approx(
        (0.9 - 1.0) * math.log(0.9) + (0.1 - EPSILON) * math.log(0.1 / EPSILON)
    )


def test_categorical_psi_by_category_share() -> None:
    ref = ["free"] * 50 + ["basic"] * 30 + ["premium"] * 20
    cur = ["free"] * 30 + ["basic"] * 30 + ["premium"] * 40
    res = categorical_psi(ref, cur)
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert res.psi == pytest.approx(expected)
    assert res.labels == ["basic", "free", "premium", UNSEEN, MISSING]
    # order of rows does not matter
    assert categorical_psi(ref[::-1], cur[::-1]).psi == pytest.approx(expected)


def test_unseen_category_goes_to_its_own_bin() -> None:
    ref = ["web"] * 80 + ["ios"] * 20
    cur = ["web"] * 76 + ["ios"] * 19 + ["tv"] * 5
    res = categorical_psi(ref, cur)
    assert res.cur_share[res.labels.index(UNSEEN)] == pytest.approx(0.05)
    assert res.ref_share[res.labels.index(UNSEEN)] == 0.0
    assert res.psi > 0.25  # a new category at 5% alone is an alert
    enc = CategoricalEncoder.fit(ref)
    assert enc.unseen_values(cur) == ["tv"]
    assert enc.transform(["ios", "web", "tv", None]).tolist() == [0, 1, 2, 3]


def test_nan_gets_its_own_bin() -> None:
    ref = np.arange(1000, dtype=float)
    cur = ref.copy()
    cur[:200] = np.nan  # 20% missing, and the lowest values gone
    res = numeric_psi(ref, cur)
    assert res.labels[-1] == MISSING
    assert res.missing_ref == 0.0 and res.missing_cur == pytest.approx(0.2)
    assert res.psi > 0.25

    # the same missing rate on both sides is no drift
    ref2 = ref.copy()
    ref2[::5] = np.nan
    cur2 = ref.copy()
    cur2[1::5] = np.nan
    assert numeric_psi(ref2, cur2).psi < 0.01


def test_nan_only_reference_does_not_crash() -> None:
    res = numeric_psi(np.full(100, np.nan), np.arange(100, dtype=float))
    assert res.labels == ["all values", MISSING]
    assert math.isfinite(res.psi) and res.psi > 0.25


def test_categorical_missing_values() -> None:
    ref = ["a", "b", None, float("nan"), ""] * 20  # None, NaN and "" are all missing
    res = categorical_psi(ref, ["a", "b", None, None, None] * 20)
    assert res.missing_ref == pytest.approx(0.6) and res.missing_cur == pytest.approx(0.6)
    assert res.psi == pytest.approx(0.0, abs=1e-12)


def test_bins_come_from_reference_quantiles_and_stay_fixed(rng: np.random.Generator) -> None:
    ref = rng.normal(size=10_001)
    bins = NumericBins.fit(ref, n_bins=10)
    assert np.array_equal(bins.edges, np.quantile(ref, np.linspace(0, 1, 11)[1:-1], method="inverted_cdf"))
    assert set(bins.edges) <= set(ref)  # cut points are reference values
    assert np.allclose(bins.counts(ref)[:-1] / ref.size, 0.1, atol=1e-3)  # deciles: 10% each
    # binning a shifted sample never moves the edges
    shifted = ref + 5.0
    assert numeric_psi(ref, shifted, bins=bins).labels == bins.labels()
    assert np.array_equal(NumericBins.fit(ref, n_bins=10).edges, bins.edges)
    # everything above the reference's top decile lands in the open top bin
    counts = bins.counts(shifted)
    assert counts[-2] > 0.99 * shifted.size and counts[-1] == 0


def test_bins_with_ties_are_right_closed() -> None:
    ref = np.array([0.0] * 700 + [1.0] * 200 + [5.0] * 100)  # counts: a heavy mass at zero
    bins = NumericBins.fit(ref)
    assert bins.edges.tolist() == [0.0, 1.0]  # deciles 0,0,0,0,0,0,0,1,1: duplicates dropped
    assert bins.counts(ref).tolist() == [700.0, 200.0, 100.0, 0.0]
    assert bins.labels() == ["<= 0", "(0, 1]", "> 1", MISSING]
    assert bins.counts(np.array([-3.0, 0.0, 0.5, 1.0, 99.0, np.nan])).tolist() == [2.0, 2.0, 1.0, 1.0]


def test_levels() -> None:
    assert [psi_level(x, 0.1, 0.25) for x in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0)] == [
        "ok",
        "ok",
        "warn",
        "warn",
        "alert",
        "alert",
    ]
