"""Benchmark cases: a model, its labelled reference and analysis windows with a performance change.

Two sources, neither designed here:

* scikit-learn's bundled datasets (no network): breast_cancer (binary), digits (10
  classes), diabetes (regression). A model is trained on 35% of the rows, 30% are the
  labelled reference, and windows are drawn from the remaining 35%: the first half of the
  windows uniformly, the second half tilted along the feature most correlated with the
  target (rows drawn with probability proportional to exp(1.5 z), z that feature
  standardised) — covariate shift by subgroup selection, the rule fixed for every dataset.
* NannyML's bundled datasets (when NannyML is installed, read from its package):
  synthetic car loan (binary), credit card (multiclass) and car price (regression), each
  with NannyML's own model outputs and its own drift in the analysis period.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: Windows before and after the shift for the scikit-learn datasets, and their size.
WINDOWS_EACH = 8
SMALL_WINDOW = 100


@dataclass
class Case:
    """One benchmark dataset: data frames with the model's outputs and the labels."""

    name: str
    problem: str  # binary | multiclass | regression
    metrics: list[str]
    features: list[str]
    reference: pd.DataFrame  # features, y_true, y_pred, (proba columns)
    analysis: pd.DataFrame  # the same columns plus ``window``
    window_size: int
    proba_columns: list[str] = field(default_factory=list)
    #: Windows from this index on are after the (known) change.
    change_at: int | None = None


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(0.35 * n), int(0.65 * n)
    return order[:a], order[a:b], order[b:]


def _windows(pool: np.ndarray, tilt: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = (tilt - tilt.mean()) / (tilt.std() or 1.0)
    p = np.exp(1.5 * z)
    p /= p.sum()
    rows, window = [], []
    for w in range(2 * WINDOWS_EACH):
        chosen = rng.choice(pool.size, SMALL_WINDOW, p=None if w < WINDOWS_EACH else p)
        rows.append(pool[chosen])
        window += [w] * SMALL_WINDOW
    return np.concatenate(rows), np.asarray(window)


def sklearn_case(name: str, split_seed: int = 0, window_seed: int = 1) -> Case:
    """One of the scikit-learn cases; the seeds of the train/reference/pool split and of the
    window draws are the benchmark's by default (other seeds: auc_check.py)."""
    from sklearn import datasets
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    loader = {
        "breast_cancer": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
        "diabetes": datasets.load_diabetes,
    }[name]
    data = loader()
    x, y = np.asarray(data.data, dtype=float), np.asarray(data.target)
    names = [f"f{i}" for i in range(x.shape[1])]
    train, ref, pool = _split(len(y), seed=split_seed)
    corr = np.nan_to_num(
        [abs(np.corrcoef(x[:, j], y)[0, 1]) if x[:, j].std() else 0 for j in range(x.shape[1])]
    )
    tilt_feature = int(np.argmax(corr))
    idx, window = _windows(pool, x[pool, tilt_feature], seed=window_seed)
    if name == "diabetes":
        model = HistGradientBoostingRegressor(max_iter=100, random_state=0).fit(x[train], y[train])
        problem, metrics, proba = "regression", ["mae", "rmse"], []
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.05)).fit(
            x[train], y[train]
        )
        problem = "binary" if len(set(y)) == 2 else "multiclass"
        metrics = ["accuracy", "f1", "auc"]
        proba = ["proba_1"] if problem == "binary" else [f"proba_{c}" for c in range(len(set(y)))]

    def frame(rows: np.ndarray) -> pd.DataFrame:
        df = pd.DataFrame(x[rows], columns=names)
        df["y_true"] = y[rows]
        df["y_pred"] = model.predict(x[rows])
        if proba:
            p = model.predict_proba(x[rows])
            for c, col in enumerate(proba):
                df[col] = p[:, 1] if problem == "binary" else p[:, c]
        return df

    analysis = frame(idx)
    analysis["window"] = window
    return Case(
        name=name,
        problem=problem,
        metrics=metrics,
        features=names,
        reference=frame(ref),
        analysis=analysis,
        window_size=SMALL_WINDOW,
        proba_columns=proba,
        change_at=WINDOWS_EACH,
    )


def nannyml_data_dir(python: str) -> Path | None:
    """Where the NannyML interpreter ``python`` keeps its bundled datasets, if it runs."""
    try:
        out = subprocess.run(
            [
                python,
                "-c",
                "import importlib.util as u; print(u.find_spec('nannyml').submodule_search_locations[0])",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(out.stdout.strip()) / "datasets" / "data"
    return path if path.is_dir() else None


def _encode(df: pd.DataFrame, ref: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Categorical columns as codes of the reference's categories (unknown: NaN)."""
    out = df.copy()
    for c in columns:
        if ref[c].dtype == object or ref[c].dtype == bool:
            cats = {v: i for i, v in enumerate(sorted(ref[c].dropna().astype(str).unique()))}
            out[c] = df[c].astype(str).map(cats).astype(float)
    return out


def _nannyml_case(name: str, data: Path, max_reference: int = 20_000) -> Case:
    if name == "car_loan":
        ref = pd.read_csv(data / "synthetic_car_loan_reference.csv")
        ana = pd.read_csv(data / "synthetic_car_loan_analysis.csv").merge(
            pd.read_csv(data / "synthetic_car_loan_analysis_target.csv"), on="id"
        )
        for df in (ref, ana):
            df.rename(columns={"repaid": "y_true", "y_pred_proba": "proba_1"}, inplace=True)
        features = [
            "car_value",
            "salary_range",
            "debt_to_income_ratio",
            "loan_length",
            "repaid_loan_on_prev_car",
            "size_of_downpayment",
            "driver_tenure",
        ]
        problem, metrics, proba = "binary", ["accuracy", "f1", "auc"], ["proba_1"]
    elif name == "credit_card":
        ref = pd.read_csv(data / "mc_reference.csv")
        ana = pd.read_csv(data / "mc_analysis.csv").merge(pd.read_csv(data / "mc_analysis_gt.csv"), on="id")
        classes = ["prepaid_card", "highstreet_card", "upmarket_card"]
        for df in (ref, ana):
            for c, cls in enumerate(classes):
                df.rename(columns={f"y_pred_proba_{cls}": f"proba_{c}"}, inplace=True)
            df["y_true"] = df["y_true"].map({c: i for i, c in enumerate(classes)})
            df["y_pred"] = df["y_pred"].map({c: i for i, c in enumerate(classes)})
        features = [
            "acq_channel",
            "app_behavioral_score",
            "requested_credit_limit",
            "app_channel",
            "credit_bureau_score",
            "stated_income",
            "is_customer",
        ]
        problem, metrics, proba = "multiclass", ["accuracy", "f1", "auc"], ["proba_0", "proba_1", "proba_2"]
    else:
        ref = pd.read_csv(data / "regression_synthetic_reference.csv")
        ana = pd.read_csv(data / "regression_synthetic_analysis.csv").merge(
            pd.read_csv(data / "regression_synthetic_analysis_targets.csv"), on="id"
        )
        features = [
            "car_age",
            "km_driven",
            "price_new",
            "accident_count",
            "door_count",
            "fuel",
            "transmission",
        ]
        problem, metrics, proba = "regression", ["mae", "rmse"], []
    ana = _encode(ana, ref, features)
    ref = _encode(ref, ref, features).head(max_reference)
    size = 5000
    ana = ana.head(len(ana) // size * size).copy()
    ana["window"] = np.arange(len(ana)) // size
    keep = [*features, "y_true", "y_pred", *proba]
    # Each dataset's change starts half way through its analysis period (NannyML's docs).
    change_at = int(ana["window"].max() + 1) // 2
    return Case(
        name,
        problem,
        metrics,
        features,
        ref[keep].reset_index(drop=True),
        ana[[*keep, "window"]],
        size,
        proba,
        change_at,
    )


def cases(nannyml_python: str | None) -> list[Case]:
    out = [sklearn_case(n) for n in ("breast_cancer", "digits", "diabetes")]
    data = nannyml_data_dir(nannyml_python) if nannyml_python else None
    if data is not None:
        out += [_nannyml_case(n, data) for n in ("car_loan", "credit_card", "car_price")]
    return out
