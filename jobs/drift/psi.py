"""Population Stability Index (PSI), numpy + pandas only: importable from the main and the drift env.

PSI compares the share of rows per bin in the *current* sample (c) with the *reference* (r):

    PSI = sum_b (c_b - r_b) * ln(c_b / r_b)

Conventions (fixed here so every report is comparable from day to day):

* **Numeric bins come from the reference only.** Cut points are the reference's deciles
  (``n_bins`` empirical quantiles, duplicates dropped, so a feature with a heavy mass at 0 gets fewer,
  wider bins). Bins are right-closed, ``(-inf, e1], (e1, e2], ..., (ek, +inf)``: the outer bins
  are open so current values outside the reference range still land in a bin.
* **Missing values (NaN/None) get their own bin**, for numeric and categorical features alike,
  so a change in the missing rate is itself drift.
* **Categorical bins** are the reference's categories plus one "unseen" bin for categories
  absent from the reference (reference share 0); :class:`CategoricalEncoder` holds the codes.
* **Empty bins** use a share of ``EPSILON`` instead of 0, so PSI stays finite; a bin empty on
  both sides contributes exactly 0.

Rule-of-thumb levels: < ``psi_warn`` (0.1) ok, < ``psi_alert`` (0.25) warn, else alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

EPSILON = 1e-4
"""Share used in place of 0 for an empty bin."""
DEFAULT_BINS = 10
"""Quantile bins for numeric features (deciles of the reference)."""
MISSING = "<missing>"
"""Label of the missing-value bin."""
UNSEEN = "<unseen>"
"""Label of the bin for categories absent from the reference."""


def psi_from_shares(ref_share: np.ndarray, cur_share: np.ndarray, eps: float = EPSILON) -> float:
    """PSI between two share vectors over the same bins (each summing to 1, or all 0)."""
    r = np.maximum(np.asarray(ref_share, dtype=float), eps)
    c = np.maximum(np.asarray(cur_share, dtype=float), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_level(psi: float, warn: float, alert: float) -> str:
    """``ok`` below ``warn``, ``warn`` below ``alert``, else ``alert``."""
    if psi >= alert:
        return "alert"
    if psi >= warn:
        return "warn"
    return "ok"


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=float)


@dataclass(frozen=True)
class NumericBins:
    """Cut points fitted on the reference; :meth:`counts` bins any sample the same way."""

    edges: np.ndarray
    """Interior cut points (sorted, unique). ``len(edges) + 1`` value bins, plus the missing bin."""

    @classmethod
    def fit(cls, reference: np.ndarray, n_bins: int = DEFAULT_BINS) -> NumericBins:
        x = np.asarray(reference, dtype=float)
        x = x[~np.isnan(x)]
        if x.size == 0:
            return cls(edges=np.array([], dtype=float))
        # Empirical quantiles (no interpolation), so cut points are values the reference holds:
        # a count feature gets integer edges rather than 0.3 between a tie at 0 and one at 1.
        qs = np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], method="inverted_cdf")
        return cls(edges=np.unique(qs))

    @property
    def n_bins(self) -> int:
        """Value bins plus the missing bin."""
        return len(self.edges) + 2

    def counts(self, sample: np.ndarray) -> np.ndarray:
        """Rows per bin: value bins in order, then the missing bin last."""
        x = np.asarray(sample, dtype=float)
        nan = np.isnan(x)
        idx = np.searchsorted(self.edges, x[~nan], side="left")  # right-closed bins
        counts = np.bincount(idx, minlength=len(self.edges) + 1).astype(float)
        return np.append(counts, float(nan.sum()))

    def labels(self) -> list[str]:
        e = [f"{v:.4g}" for v in self.edges]
        if not e:
            return ["all values", MISSING]
        out = [f"<= {e[0]}"]
        out += [f"({a}, {b}]" for a, b in zip(e[:-1], e[1:], strict=True)]
        out.append(f"> {e[-1]}")
        return [*out, MISSING]


@dataclass(frozen=True)
class PsiResult:
    psi: float
    labels: list[str]
    ref_share: np.ndarray = field(repr=False)
    cur_share: np.ndarray = field(repr=False)
    missing_ref: float = 0.0
    """Share of missing values in the reference."""
    missing_cur: float = 0.0


def numeric_psi(
    reference: np.ndarray,
    current: np.ndarray,
    bins: NumericBins | None = None,
    n_bins: int = DEFAULT_BINS,
    eps: float = EPSILON,
) -> PsiResult:
    """PSI of a numeric feature with reference-quantile bins (pass ``bins`` to reuse a fit)."""
    bins = bins or NumericBins.fit(reference, n_bins)
    r = _shares(bins.counts(reference))
    c = _shares(bins.counts(current))
    return PsiResult(psi_from_shares(r, c, eps), bins.labels(), r, c, float(r[-1]), float(c[-1]))


@dataclass(frozen=True)
class CategoricalEncoder:
    """Integer codes fitted on the reference, shared by the PSI and the chi-squared test.

    Codes ``0..k-1`` are the reference's categories (sorted), ``k`` is "unseen" (any category
    absent from the reference) and ``k+1`` is missing (None/NaN/empty string).
    """

    categories: tuple[str, ...]

    @classmethod
    def fit(cls, reference: Sequence[object] | np.ndarray | pd.Series) -> CategoricalEncoder:
        s = _as_str_series(reference)
        return cls(categories=tuple(sorted(s.dropna().unique().tolist())))

    @property
    def unseen_code(self) -> int:
        return len(self.categories)

    @property
    def missing_code(self) -> int:
        return len(self.categories) + 1

    @property
    def n_codes(self) -> int:
        return len(self.categories) + 2

    def transform(self, values: Sequence[object] | np.ndarray | pd.Series) -> np.ndarray:
        s = _as_str_series(values)
        codes = pd.Categorical(s, categories=list(self.categories)).codes.astype(np.int64)
        missing = s.isna().to_numpy()
        codes[(codes < 0) & ~missing] = self.unseen_code
        codes[missing] = self.missing_code
        return codes

    def unseen_values(self, values: Sequence[object] | np.ndarray | pd.Series, limit: int = 10) -> list[str]:
        """The most frequent categories of ``values`` that the reference never had."""
        s = _as_str_series(values).dropna()
        vc = s[~s.isin(self.categories)].value_counts()
        return [str(v) for v in vc.index[:limit]]

    def labels(self) -> list[str]:
        return [*self.categories, UNSEEN, MISSING]

    def counts(self, codes: np.ndarray) -> np.ndarray:
        return np.bincount(np.asarray(codes, dtype=np.int64), minlength=self.n_codes).astype(float)


def _as_str_series(values: Sequence[object] | np.ndarray | pd.Series) -> pd.Series:
    """Values as strings; None, NaN and empty strings become missing (NA)."""
    s = pd.Series(values, copy=False) if not isinstance(values, pd.Series) else values
    s = s.astype("string")
    return s.mask(s == "")


def categorical_psi(
    reference: Sequence[object] | np.ndarray | pd.Series,
    current: Sequence[object] | np.ndarray | pd.Series,
    encoder: CategoricalEncoder | None = None,
    eps: float = EPSILON,
) -> PsiResult:
    """PSI over category shares (reference categories, then "unseen", then missing).

    Categories never seen in the reference share one "unseen" bin whose reference share is 0
    (so ``EPSILON``): a new category at 5% of rows alone adds
    about 0.05 * ln(0.05 / 1e-4) ~= 0.31 to the PSI.
    """
    encoder = encoder or CategoricalEncoder.fit(reference)
    r = _shares(encoder.counts(encoder.transform(reference)))
    c = _shares(encoder.counts(encoder.transform(current)))
    return PsiResult(psi_from_shares(r, c, eps), encoder.labels(), r, c, float(r[-1]), float(c[-1]))
