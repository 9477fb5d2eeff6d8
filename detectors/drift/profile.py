"""Reference profiles: what a drift test needs from the reference, computed once.

A window is compared against a profile, never against the raw reference again: numeric
features keep their sorted sample (every EDF test is a merge or a binary search into it),
quantile-bin edges with the reference counts per bin (PSI, Jensen-Shannon, Hellinger), and
summary moments; categorical features keep category counts. Missing values are counted
apart from the values, so each feature also carries its reference missing rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Numeric features with at most this many distinct reference values are tested as categories.
DISCRETE_MAX_VALUES = 10
#: Quantile bins of numeric features for the histogram tests.
DEFAULT_BINS = 10
#: Largest sorted sample kept per numeric feature; beyond it a uniform subsample is kept.
DEFAULT_MAX_SAMPLE = 50_000
#: Whole reference rows kept (a uniform subsample) to resample no-drift windows from, which
#: calibrates the ``minp`` correction to how the features move together.
DEFAULT_NULL_ROWS = 5_000
UNSEEN = "<unseen>"


@dataclass
class NumericProfile:
    """Sorted sample, quantile bins and moments of one numeric feature."""

    name: str
    sorted: np.ndarray
    n_missing: int
    edges: np.ndarray
    bin_counts: np.ndarray
    mean: float
    std: float
    #: Standard deviation used to scale distances (IQR-based fallback when std is 0).
    scale: float
    quantiles: dict[str, float] = field(default_factory=dict)
    kind: str = "numeric"

    @property
    def n(self) -> int:
        return int(self.sorted.size)

    @property
    def n_total(self) -> int:
        return self.n + self.n_missing

    @property
    def missing_rate(self) -> float:
        return self.n_missing / self.n_total if self.n_total else 0.0

    def bin_current(self, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference and current counts over the reference's quantile bins."""
        idx = np.searchsorted(self.edges, current, side="right")
        return self.bin_counts, np.bincount(idx, minlength=self.bin_counts.size)

    def summary(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, **self.quantiles}


@dataclass
class CategoricalProfile:
    """Category counts of one categorical (or discrete numeric) feature."""

    name: str
    categories: list[str]
    counts: np.ndarray
    n_missing: int
    kind: str = "categorical"
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {c: i for i, c in enumerate(self.categories)}

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def n_total(self) -> int:
        return self.n + self.n_missing

    @property
    def missing_rate(self) -> float:
        return self.n_missing / self.n_total if self.n_total else 0.0

    def bin_current(self, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference and current counts per category, with a last cell for unseen categories."""
        cur = np.zeros(len(self.categories) + 1, dtype=np.int64)
        for v, c in label_counts(current).items():
            cur[self._index.get(v, len(self.categories))] += c
        return np.append(self.counts, 0), cur

    def unseen(self, current: np.ndarray) -> dict[str, int]:
        """Categories of the current window never seen in the reference, with their counts."""
        return {v: c for v, c in label_counts(current).items() if v not in self._index}

    def shares(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {c: float(k) / n for c, k in zip(self.categories, self.counts.tolist(), strict=True)}


FeatureProfile = NumericProfile | CategoricalProfile


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def infer_kind(values: Sequence[Any] | np.ndarray) -> str:
    """``numeric`` when every present value is a number (not a bool), else ``categorical``."""
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if arr.dtype.kind in "fiu":
        return "numeric"
    present = [v for v in arr.tolist() if not is_missing(v)]
    if present and all(_is_number(v) for v in present):
        return "numeric"
    return "categorical"


def split_numeric(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, int]:
    """Present values as float64 and the number missing (None, NaN or not a number)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiu":
        x = arr.astype(np.float64, copy=False)
    else:
        x = np.array([float(v) if _is_number(v) else np.nan for v in arr.tolist()], dtype=np.float64)
    ok = ~np.isnan(x)
    return x[ok], int(x.size - int(ok.sum()))


def split_categorical(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, int]:
    """Present values as strings and the number missing."""
    if isinstance(values, Labels):
        present_mask: np.ndarray = np.asarray(values).view(np.ndarray) != None  # noqa: E711 - per element
        present = np.asarray(values)[present_mask].view(np.ndarray)
        return present, int(values.size - present.size)
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    keep = [str(v) for v in items if not is_missing(v)]
    return np.asarray(keep, dtype=object), len(items) - len(keep)


def numeric_profile(
    name: str,
    values: Sequence[Any] | np.ndarray,
    *,
    bins: int = DEFAULT_BINS,
    max_sample: int = DEFAULT_MAX_SAMPLE,
    seed: int = 0,
) -> NumericProfile:
    x, n_missing = split_numeric(values)
    if x.size > max_sample:
        x = np.random.default_rng(seed).choice(x, size=max_sample, replace=False)
    x = np.sort(x)
    if x.size:
        edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
        mean, std = float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0
        q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
        iqr = float(q[3] - q[1]) / 1.349
        scale = std if std > 0 else (iqr if iqr > 0 else 1.0)
        quantiles = {
            "p05": float(q[0]),
            "p25": float(q[1]),
            "p50": float(q[2]),
            "p75": float(q[3]),
            "p95": float(q[4]),
        }
    else:
        edges, counts, mean, std, scale, quantiles = (
            np.empty(0),
            np.zeros(1, dtype=np.int64),
            0.0,
            0.0,
            1.0,
            {},
        )
    return NumericProfile(name, x, n_missing, edges, counts, mean, std, scale, quantiles)


def categorical_profile(name: str, values: Sequence[Any] | np.ndarray) -> CategoricalProfile:
    x, n_missing = split_categorical(values)
    cats, counts = (
        np.unique(x.astype(str), return_counts=True) if x.size else (np.empty(0, dtype=str), np.empty(0))
    )
    return CategoricalProfile(name, [str(c) for c in cats.tolist()], counts.astype(np.int64), n_missing)


def feature_profile(
    name: str, values: Sequence[Any] | np.ndarray, kind: str | None = None, **kw: Any
) -> FeatureProfile:
    """Profile of one feature; ``kind`` is inferred when not given, and low-cardinality numbers
    (at most ``DISCRETE_MAX_VALUES`` distinct values) are profiled as categories."""
    kind = kind or infer_kind(values)
    if kind == "numeric":
        prof = numeric_profile(name, values, **kw)
        if np.unique(prof.sorted).size > DISCRETE_MAX_VALUES:
            return prof
        kind = "categorical"
    return categorical_profile(name, canon_all(values))


def _canon(value: Any) -> Any:
    """Numbers as stable category labels (1 and 1.0 are the same category)."""
    if is_missing(value):
        return None
    if _is_number(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def current_values(profile: FeatureProfile, values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, int]:
    """A window's values of one feature in the profile's representation, and how many are missing."""
    if isinstance(profile, NumericProfile):
        return split_numeric(values)
    return split_categorical(canon_all(values))


class Labels(np.ndarray):
    """An object array of category labels already in canonical form (text, or None where
    missing), as a store's feature window returns them: read without a call per value."""


def canon_all(values: Sequence[Any] | np.ndarray) -> Sequence[Any] | np.ndarray:
    """``_canon`` of every value (``Labels`` are canonical already)."""
    if isinstance(values, Labels):
        return values
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    return [_canon(v) for v in items]


class CountedLabels(np.ndarray):
    """A window's present labels with their counts, counted once: a categorical feature's
    test and its movement summary both need them (on a 360k-row window each count is ~50 ms
    of Python hashing). A slice or other view of it is counted again."""

    counts: dict[str, int] | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.counts = None


def counted(values: np.ndarray) -> CountedLabels:
    """``values`` (present labels, as ``split_categorical`` returns them) with their counts."""
    out = values.view(CountedLabels)
    out.counts = label_counts(values)
    return out


def label_counts(values: np.ndarray) -> dict[str, int]:
    """How often each label (text, as ``split_categorical`` returns them) occurs, in label
    order: counted in one pass, without converting the labels to a fixed-width array."""
    if isinstance(values, CountedLabels) and values.counts is not None:
        return dict(values.counts)
    if values.dtype == object:
        return dict(sorted(Counter(values.tolist()).items()))
    labels, counts = np.unique(values.astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(labels.tolist(), counts.tolist(), strict=True)}


@dataclass
class ReferenceProfile:
    """Per-feature profiles of a reference dataset, plus the rows kept for multivariate tests."""

    features: dict[str, FeatureProfile]
    n_rows: int
    #: Standardised numeric matrix (rows x numeric features, NaN imputed) for MMD / classifier.
    matrix: np.ndarray | None = None
    matrix_columns: list[str] = field(default_factory=list)
    #: Per-column centre and scale used to standardise ``matrix``; windows use the same.
    centre: np.ndarray | None = None
    spread: np.ndarray | None = None
    #: Raw values of a uniform subsample of whole reference rows, per feature (same rows in
    #: every column), kept so no-drift windows can be resampled with their joint structure.
    sample_rows: dict[str, np.ndarray] | None = None
    #: Resampled null distributions, computed on first use (see ``detectors.drift.min_p``).
    null_cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        *,
        kinds: Mapping[str, str] | None = None,
        bins: int = DEFAULT_BINS,
        max_sample: int = DEFAULT_MAX_SAMPLE,
        multivariate_rows: int = 0,
        null_rows: int = DEFAULT_NULL_ROWS,
        seed: int = 0,
    ) -> ReferenceProfile:
        kinds = kinds or {}
        feats = {
            name: feature_profile(name, vals, kinds.get(name), bins=bins, max_sample=max_sample, seed=seed)
            for name, vals in columns.items()
        }
        n_rows = max((len(v) for v in columns.values()), default=0)
        prof = cls(feats, n_rows)
        if null_rows and n_rows:
            keep = np.arange(n_rows)
            if n_rows > null_rows:
                keep = np.sort(np.random.default_rng(seed).choice(n_rows, null_rows, replace=False))
            prof.sample_rows = {name: _take(vals, keep) for name, vals in columns.items()}
        if multivariate_rows:
            prof.matrix_columns = [n for n, f in feats.items() if isinstance(f, NumericProfile)]
            if prof.matrix_columns:
                raw = prof.raw_matrix(columns)
                prof.centre = np.nanmedian(raw, axis=0)
                prof.centre = np.where(np.isnan(prof.centre), 0.0, prof.centre)
                prof.spread = np.array([feats[c].scale for c in prof.matrix_columns])  # type: ignore[union-attr]
                mat = prof.standardise(raw)
                if mat.shape[0] > multivariate_rows:
                    mat = mat[
                        np.random.default_rng(seed).choice(mat.shape[0], multivariate_rows, replace=False)
                    ]
                prof.matrix = mat
        return prof

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], **kw: Any) -> ReferenceProfile:
        return cls.from_columns(rows_to_columns(rows), **kw)

    def raw_matrix(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        n = max((len(columns[c]) for c in self.matrix_columns if c in columns), default=0)
        out = np.full((n, len(self.matrix_columns)), np.nan)
        for j, c in enumerate(self.matrix_columns):
            if c in columns:
                arr = np.asarray(columns[c])
                out[:, j] = (
                    arr.astype(np.float64)
                    if arr.dtype.kind in "fiu"
                    else [float(v) if _is_number(v) else np.nan for v in arr.tolist()]
                )
        return out

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        assert self.centre is not None and self.spread is not None
        z = (raw - self.centre) / self.spread
        return np.where(np.isnan(z), 0.0, z)


def _take(values: Sequence[Any] | np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values`` at ``rows``; a column shorter than the reference is missing past its end."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiub":
        arr = np.asarray(values, dtype=object)
    if rows.size and rows[-1] >= arr.size:
        padded = np.full(int(rows[-1]) + 1, None, dtype=object)
        padded[: arr.size] = arr
        arr = padded
    return arr[rows]


def rows_to_columns(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Column lists from dict rows; a key absent from a row is a missing value there."""
    cols: dict[str, list[Any]] = {}
    n = 0
    for row in rows:
        for k, v in row.items():
            col = cols.get(k)
            if col is None:
                col = [None] * n
                cols[k] = col
            col.append(v)
        n += 1  # noqa: SIM113 - rows of different widths, counted as they come
        for col in cols.values():
            if len(col) < n:
                col.append(None)
    return cols
