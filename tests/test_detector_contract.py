"""One contract every detector passes (river's ``tests/test_drift_detectors.py`` pattern).

Detector classes are discovered from the packages (``detectors``, ``gpu_health``), not
listed by hand: a new class without a case here fails ``test_every_detector_has_a_case``.
Families and what each promises:

* store detectors (``mlvigil.core.detector.Detector``; drift monitors once per monitor kind and
  streaming evaluator): nothing on a stationary stream, a Finding on an obvious change,
  every Finding of the shape the engine, alerts and the API read (bounded labels and
  evidence), and the same conditions again when evaluated again with no new rows;
* streaming drift detectors (``DriftDetector``): ``update`` returns ``drift_detected``, no
  alarm on a stationary stream, an alarm soon after a change, and ``reset`` restarts them
  exactly (the same stream after a reset alarms where a fresh detector does);
* windowed two-sample tests (``UnivariateTest``, and the multivariate ones by name): no
  drift between samples of one distribution, drift after a shift;
* performance estimators (``PerformanceEstimator``): no alarm on reference-like traffic,
  an alarm where the model does worse;
* GPU health rules (``Rule``): nothing on healthy GPUs, their fault on their scenario.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import detectors
import gpu_health
from detectors.carbon import CarbonConfig, CarbonIntensity
from detectors.carbon.budget import CarbonBudgetDetector
from detectors.carbon.serving import ServingCarbonDetector
from detectors.drift.config import DriftConfig, MonitorConfig
from detectors.drift.monitor import KINDS, MonitorDetector
from detectors.drift.monitors.streaming import StreamingEvaluator
from detectors.drift.stats import MULTIVARIATE, UnivariateTest
from detectors.drift.stats.classifier import ClassifierTwoSample
from detectors.drift.stats.mmd import MMD
from detectors.drift.streaming.base import DriftDetector
from detectors.estimation import Sample
from detectors.estimation.base import PerformanceEstimator
from detectors.training import TrainingConfig
from detectors.training.detectors import (
    DataloaderStallDetector,
    LossAnomalyDetector,
    SlowdownDetector,
    StragglerDetector,
    ThroughputDropDetector,
)
from detectors.training.synthetic import RunSpec, simulate, to_batch
from gpu_health.fake import builtin_scenario
from gpu_health.health import GpuHealthDetector
from gpu_health.rules.base import Rule
from gpu_health.simulate import Simulation
from mlvigil.core.detector import Detector
from mlvigil.core.findings import Finding, Severity
from mlvigil.core.records import RecordBatch
from mlvigil.core.store import Store
from mlvigil.core.store.duckdb import DuckDBStore

#: Bounds on what a Finding carries (alerts, the API and the store's documents read them).
MAX_LABELS = 16
MAX_LABEL_CHARS = 256
MAX_SUMMARY_CHARS = 2000
MAX_EVIDENCE_BYTES = 256 * 1024


# -- discovery -----------------------------------------------------------------------------
def _import_all() -> None:
    for pkg in (detectors, gpu_health):
        for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(mod.name)


def concrete_subclasses(base: type) -> set[type]:
    """Every non-abstract, public subclass of ``base`` defined in the detector packages."""
    _import_all()
    out: set[type] = set()
    todo: list[type] = [base]
    while todo:
        subs: list[type] = todo.pop().__subclasses__()
        for sub in subs:
            todo.append(sub)
            in_packages = sub.__module__.split(".")[0] in ("detectors", "gpu_health")
            if in_packages and not inspect.isabstract(sub) and not sub.__name__.startswith("_"):
                out.add(sub)
    return out


def _name(cls: Any) -> str:
    return str(cls.__name__)


# -- the Finding's shape -------------------------------------------------------------------
def check_finding(f: Any) -> None:
    assert isinstance(f, Finding), f"{f!r} is not a Finding"
    assert isinstance(f.kind, str) and f.kind, "a Finding needs a kind"
    assert isinstance(f.severity, Severity), f"severity {f.severity!r} is not a Severity"
    assert isinstance(f.subject, dict) and 0 < len(f.subject) <= MAX_LABELS, f.subject
    for k, v in f.subject.items():
        assert isinstance(k, str) and isinstance(v, str), f"subject label {k!r}: {v!r} is not str -> str"
        assert len(k) <= MAX_LABEL_CHARS and len(v) <= MAX_LABEL_CHARS, f"subject label {k!r} too long"
    assert isinstance(f.summary, str) and 0 < len(f.summary) <= MAX_SUMMARY_CHARS, f.summary
    assert isinstance(f.key, str), f"key {f.key!r} is not a str"
    assert isinstance(f.evidence, dict), "evidence is a dict"
    size = len(json.dumps(f.evidence, default=str))
    assert size <= MAX_EVIDENCE_BYTES, f"evidence of {size} bytes; at most {MAX_EVIDENCE_BYTES}"
    json.dumps(f.to_dict(), default=str)  # storable
    if f.window_start is not None and f.window_end is not None:
        assert f.window_start <= f.window_end, (f.window_start, f.window_end)


# -- store detectors -----------------------------------------------------------------------
#: A scenario writes rows into the store and yields each time the detector is evaluated.
Scenario = Callable[[Store, Detector, bool], Iterator[float]]


@dataclass(frozen=True)
class StoreCase:
    make: Callable[[], Detector]
    #: (store, detector, change) -> the times to evaluate at, after writing the rows before each.
    scenario: Scenario


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-3.0 * x)))


def _model_rows(
    rng: np.random.Generator, n: int, *, shift: float = 0.0, hard: bool = False, flip: float = 0.0
) -> list[dict[str, Any]]:
    """A binary model with calibrated scores; ``shift`` moves its inputs, ``hard`` puts them
    near its boundary, ``flip`` is the share of labels it gets wrong on top."""
    x = rng.uniform(-0.3, 0.3, n) if hard else rng.normal(shift, 1.5, n)
    p = _sigmoid(x)
    y = (rng.random(n) < p).astype(int)
    y = np.where(rng.random(n) < flip, 1 - (p >= 0.5).astype(int), y)
    other = rng.normal(size=n)
    return [
        {"x": float(a), "other": float(b), "score": float(s), "prediction": int(s >= 0.5), "label": int(t)}
        for a, b, s, t in zip(x, other, p, y, strict=True)
    ]


def _write_inferences(store: Store, rows: list[dict[str, Any]], t0: float, rid: str) -> float:
    batch = RecordBatch()
    for i, r in enumerate(rows):
        batch.add(
            "inferences",
            ts=t0 + i,
            service="s",
            model="m",
            model_version="v1",
            request_id=f"{rid}{i}",
            features=json.dumps({"x": r["x"], "other": r["other"]}),
            prediction=json.dumps(r["prediction"]),
            score=r["score"],
            source="otlp",
        )
        batch.add("labels", ts=t0 + i + 0.5, request_id=f"{rid}{i}", label=json.dumps(r["label"]))
    store.append(batch)
    return t0 + len(rows)


def _monitor(**kw: Any) -> Callable[[], Detector]:
    def make() -> Detector:
        cfg = MonitorConfig.model_validate({"name": "contract", "service": "s", "model": "m", **kw})
        return MonitorDetector(cfg.resolved(DriftConfig().defaults))

    return make


def _window_scenario(**change: Any) -> Scenario:
    """A traffic reference over [0, 1000), then a window of 400 rows, changed or not."""

    def scenario(store: Store, det: Detector, changed: bool) -> Iterator[float]:
        rng = np.random.default_rng(1)
        _write_inferences(store, _model_rows(rng, 1000), 0.0, "ref")
        end = _write_inferences(store, _model_rows(rng, 400, **(change if changed else {})), 2000.0, "w")
        yield end + 1.0

    return scenario


def _estimated_scenario(store: Store, det: Detector, changed: bool) -> Iterator[float]:
    rng = np.random.default_rng(0)
    assert isinstance(det, MonitorDetector)
    ref = _model_rows(rng, 3000)
    det.set_dataset({k: [r[k] for r in ref] for k in ref[0]})
    end = _write_inferences(store, _model_rows(rng, 400, hard=changed), 1000.0, "w")
    yield end + 1.0


def _stream_scenario(**change: Any) -> Scenario:
    """A traffic reference, then batches of rows through the stream (the change from the third)."""

    def scenario(store: Store, det: Detector, changed: bool) -> Iterator[float]:
        rng = np.random.default_rng(2)
        _write_inferences(store, _model_rows(rng, 1000), 0.0, "ref")
        t = 2000.0
        for i in range(6):
            shifted = changed and i >= 2
            t = _write_inferences(store, _model_rows(rng, 300, **(change if shifted else {})), t, f"b{i}")
            yield t + 20.0  # past the stream's lag

    return scenario


def _llm_scenario(store: Store, det: Detector, changed: bool) -> Iterator[float]:
    # Each monitor's false alarm rate is alpha (5%): the seeds here are fixed, not tuned per run.
    rng = np.random.default_rng(103)

    def write(n: int, t0: float, scale: float) -> float:
        batch = RecordBatch()
        for i in range(n):
            batch.add(
                "llm_calls",
                ts=t0 + i,
                service="chat",
                request_model="llama",
                response_model="llama",
                input_tokens=int(rng.normal(300, 40) * scale),
                output_tokens=int(rng.normal(200, 30) * scale),
                latency_s=float(rng.gamma(4.0, 0.25) * scale),
            )
        store.append(batch)
        return t0 + n

    write(1000, 0.0, 1.0)
    yield write(400, 2000.0, 3.0 if changed else 1.0) + 1.0


REFERENCE = {"start": 0, "end": 1000}
MONITOR_CASES: dict[str, StoreCase] = {
    "data": StoreCase(
        _monitor(kind="data", reference=REFERENCE, window={"size": 400}), _window_scenario(shift=1.5)
    ),
    "prediction": StoreCase(
        _monitor(kind="prediction", reference=REFERENCE, window={"size": 400}), _window_scenario(shift=1.5)
    ),
    "performance": StoreCase(
        _monitor(kind="performance", reference=REFERENCE, window={"size": 400}, metrics=["accuracy"]),
        _window_scenario(flip=0.5),
    ),
    "estimated_performance": StoreCase(
        _monitor(
            kind="estimated_performance",
            reference={"dataset": True},
            metrics=["accuracy"],
            window={"size": 400, "min_size": 100},
            max_drop=0.02,
        ),
        _estimated_scenario,
    ),
    "llm": StoreCase(
        lambda: MonitorDetector(
            MonitorConfig.model_validate(
                {
                    "name": "contract",
                    "kind": "llm",
                    "service": "chat",
                    "reference": REFERENCE,
                    "window": {"size": 400},
                    "signals": ["input_tokens", "output_tokens", "latency_s"],
                }
            ).resolved(DriftConfig().defaults)
        ),
        _llm_scenario,
    ),
}
STREAMING_CASES: dict[str, StoreCase] = {
    "DistributionStreaming": StoreCase(
        _monitor(kind="data", reference=REFERENCE, streaming={"detector": "cvm", "lag": 10}),
        _stream_scenario(shift=2.0),
    ),
    "ErrorStreaming": StoreCase(
        _monitor(kind="performance", reference=REFERENCE, metrics=["accuracy"], streaming={"lag": 10}),
        _stream_scenario(flip=0.6),
    ),
}


def _training_scenario(mutate: Callable[[dict[str, Any]], None]) -> Scenario:
    """A clean synthetic run, ``mutate`` applied to each row when changed; 5 steps per write."""

    def scenario(store: Store, det: Detector, changed: bool) -> Iterator[float]:
        rows = simulate(RunSpec(world_size=4, steps=240, seed=9))
        if changed:
            for r in rows:
                mutate(r)
        for lo in range(0, 240, 5):
            batch = [r for r in rows if lo <= r["step"] < lo + 5]
            store.append(to_batch("training_steps", batch))
            yield max(r["ts"] for r in batch) + 1.0

    return scenario


def _slower(r: dict[str, Any]) -> None:
    if r["step"] >= 150:
        r["step_time_s"] *= 1.4


def _straggler(r: dict[str, Any]) -> None:
    if r["step"] >= 120 and r["rank"] == 1:
        extra = 0.3 * r["step_time_s"]
        r["comm_s"] = max(r["comm_s"] - extra, 0.0)


def _fewer_tokens(r: dict[str, Any]) -> None:
    if r["step"] >= 150:
        r["tokens"] *= 0.6


def _waits_for_data(r: dict[str, Any]) -> None:
    if r["step"] >= 140 and r["rank"] == 1:
        r["data_wait_s"] = 0.6 * r["step_time_s"]


def _nan_loss(r: dict[str, Any]) -> None:
    if r["step"] == 61 and r["rank"] == 2:
        r["loss"] = math.nan


CI = CarbonIntensity(100.0, "FRA", None, "configured")


def _budget_scenario(store: Store, det: Detector, changed: bool) -> Iterator[float]:
    b = RecordBatch()
    attrs = json.dumps({"mlvigil.carbon.tracker_run": "t1", "mlvigil.train.run_id": "r1"})
    for i in range(1, 6 if changed else 4):  # 200 g a step; the budget is 1 kg
        for name, value in (("mlvigil.carbon.energy", 1.0e6 * i), ("mlvigil.carbon.emissions", 200.0 * i)):
            b.add("metric_points", ts=float(i), name=name, value=value, attributes=attrs, kind="sum")
    store.append(b)
    yield 10.0


def _serving_scenario(store: Store, det: Detector, changed: bool) -> Iterator[float]:
    b = RecordBatch()
    for i in range(400):
        b.add(
            "llm_calls",
            ts=1000.0 + i,
            service="chat",
            request_model="llama",
            input_tokens=300,
            output_tokens=200,
        )
    watts = 250.0 if changed else 100.0  # 13.9 vs 5.6 g per 1M tokens; the budget is 10
    for t in (0.0, 1000.0, 1400.0):
        b.add("metric_points", ts=t, hw_id="GPU-S", name="hw.energy", value=5e5 + watts * t)
    store.append(b)
    yield 1400.0


STORE_CASES: dict[type, StoreCase] = {
    MonitorDetector: MONITOR_CASES["data"],
    SlowdownDetector: StoreCase(lambda: SlowdownDetector(TrainingConfig()), _training_scenario(_slower)),
    StragglerDetector: StoreCase(lambda: StragglerDetector(TrainingConfig()), _training_scenario(_straggler)),
    ThroughputDropDetector: StoreCase(
        lambda: ThroughputDropDetector(TrainingConfig()), _training_scenario(_fewer_tokens)
    ),
    DataloaderStallDetector: StoreCase(
        lambda: DataloaderStallDetector(TrainingConfig()), _training_scenario(_waits_for_data)
    ),
    LossAnomalyDetector: StoreCase(
        lambda: LossAnomalyDetector(TrainingConfig()), _training_scenario(_nan_loss)
    ),
    CarbonBudgetDetector: StoreCase(
        lambda: CarbonBudgetDetector(
            CarbonConfig.model_validate({"budgets": [{"name": "g", "run_id": "r1", "kg_co2e": 1.0}]}), CI
        ),
        _budget_scenario,
    ),
    ServingCarbonDetector: StoreCase(
        lambda: ServingCarbonDetector(
            CarbonConfig.model_validate(
                {
                    "serving": [
                        {
                            "name": "chat",
                            "service": "chat",
                            "g_per_1m_tokens": 10.0,
                            "window": 400,
                            "gpu_uuids": ["GPU-S"],
                        }
                    ]
                }
            ),
            CI,
        ),
        _serving_scenario,
    ),
}


def _gpu_scenario(name: str, seconds: float) -> Scenario:
    def scenario(store: Store, det: Detector, changed: bool) -> Iterator[float]:
        sim = Simulation.start(builtin_scenario(name if changed else "healthy"), store)
        sim.run(seconds, 2.0)
        yield sim.now

    return scenario


STORE_CASES[GpuHealthDetector] = StoreCase(GpuHealthDetector, _gpu_scenario("xid_mixed", 40))

ALL_STORE_CASES = {
    **{cls.__name__: case for cls, case in STORE_CASES.items()},
    **{f"MonitorDetector[{kind}]": case for kind, case in MONITOR_CASES.items()},
    **{f"MonitorDetector[{name}]": case for name, case in STREAMING_CASES.items()},
}


def run_store_case(case: StoreCase, tmp_path: Path, changed: bool) -> tuple[Detector, list[Finding], Store]:
    store = DuckDBStore(tmp_path / ("changed" if changed else "stationary"))
    det = case.make()
    found: list[Finding] = []
    latest: list[Finding] = []
    now = 0.0
    for now in case.scenario(store, det, changed):
        latest = list(det.evaluate(store, now))
        found.extend(latest)
    # Evaluated again with no new rows: the same conditions hold.
    again = det.evaluate(store, now)
    assert {f.id for f in again} == {f.id for f in latest}, "a second evaluation changed its answer"
    return det, found, store


@pytest.mark.parametrize("name", sorted(ALL_STORE_CASES))
def test_store_detector_contract(name: str, tmp_path: Path) -> None:
    case = ALL_STORE_CASES[name]
    det, stationary, store = run_store_case(case, tmp_path, changed=False)
    try:
        assert isinstance(det.name, str) and det.name, "a detector needs a name"
        assert stationary == [], f"{name} reported on a stationary stream: {[f.summary for f in stationary]}"
    finally:
        det.close()
        store.close()
    det, changed, store = run_store_case(case, tmp_path, changed=True)
    try:
        assert changed, f"{name} reported nothing on an obvious change"
        for f in changed:
            check_finding(f)
    finally:
        det.close()
        store.close()


# -- streaming drift detectors -------------------------------------------------------------
@dataclass(frozen=True)
class StreamCase:
    make: Callable[[], DriftDetector]
    #: (stationary stream, stream with a change at ``change_at``, change_at, most rows of delay)
    streams: Callable[[], tuple[list[Any], list[Any], int, int]]


def _bernoulli() -> tuple[list[Any], list[Any], int, int]:
    rng = np.random.default_rng(4)
    calm = (rng.random(3000) < 0.1).astype(float).tolist()
    change = calm[:2000] + (rng.random(1000) < 0.5).astype(float).tolist()
    return calm, change, 2000, 300


def _gaussian() -> tuple[list[Any], list[Any], int, int]:
    rng = np.random.default_rng(5)
    calm = rng.normal(0.1, 0.05, 1500).tolist()
    return calm, calm[:1000] + rng.normal(0.4, 0.05, 500).tolist(), 1000, 100


_REFERENCE = np.random.default_rng(6).normal(size=(1000, 2))


def _vectors() -> tuple[list[Any], list[Any], int, int]:
    # 60 steps at a false alarm per 2000 on average: a few seeds in a hundred alarm once.
    rng = np.random.default_rng(8)
    calm = list(rng.normal(size=(600, 2)))
    return calm, calm[:300] + list(rng.normal(1.5, 1.0, size=(300, 2))), 300, 100


STREAM_CASES: dict[type, StreamCase] = {}


def _register_stream_cases() -> None:
    from detectors.drift.streaming import ADWIN, OnlineCVM, OnlineMMD, PageHinkley

    STREAM_CASES[ADWIN] = StreamCase(ADWIN, _bernoulli)
    STREAM_CASES[PageHinkley] = StreamCase(lambda: PageHinkley(delta=0.005, threshold=5.0), _gaussian)
    STREAM_CASES[OnlineCVM] = StreamCase(
        lambda: OnlineCVM(_REFERENCE, window_size=50, ert=2000, stride=10, n_bootstraps=20_000), _vectors
    )
    STREAM_CASES[OnlineMMD] = StreamCase(
        lambda: OnlineMMD(_REFERENCE, window_size=30, ert=2000, stride=10, n_bootstraps=20_000), _vectors
    )
    try:
        import alibi_detect  # noqa: F401
    except ImportError:
        return
    from detectors.drift.alibi_backend import AlibiOnline, online_detector

    STREAM_CASES[AlibiOnline] = StreamCase(
        lambda: online_detector("CVMDriftOnline", _REFERENCE, ert=1000, window_size=50, n_bootstraps=10_000),
        _vectors,
    )


_register_stream_cases()


@pytest.mark.parametrize("cls", sorted(STREAM_CASES, key=_name), ids=_name)
def test_streaming_detector_contract(cls: type) -> None:
    case = STREAM_CASES[cls]
    calm, change, change_at, delay = case.streams()
    det = case.make()
    assert isinstance(det, DriftDetector) and det.drift_detected is False
    for x in calm:
        fired = det.update(x)
        assert fired is det.drift_detected, "update returns drift_detected"
        assert not fired, f"{cls.__name__} alarmed on a stationary stream"
        assert isinstance(det.statistic, float) and isinstance(det.threshold, float)
    fresh = case.make()
    alarms = fresh.update_many(change)
    assert alarms, f"{cls.__name__} missed an obvious change"
    assert change_at <= alarms[0] < change_at + delay, (alarms[0], change_at)
    # Resettable: after reset the detector behaves as a fresh one on the same stream.
    fresh.reset()
    assert fresh.drift_detected is False
    assert fresh.update_many(change) == alarms


# -- windowed two-sample tests -------------------------------------------------------------
def _is_drift(p_value: float | None, distance: float, threshold: float) -> bool:
    return p_value < 0.01 if p_value is not None else distance > threshold


@pytest.mark.parametrize(
    "cls",
    sorted(concrete_subclasses(UnivariateTest), key=_name),
    ids=_name,
)
def test_univariate_test_contract(cls: type[UnivariateTest]) -> None:
    rng = np.random.default_rng(8)
    test = cls()
    if "numeric" in cls.accepts:
        ref, same, moved = rng.normal(size=2000), rng.normal(size=500), rng.normal(1.0, 1.0, 500)
    else:
        cats = np.array(["a", "b", "c", "d"])
        ref = rng.choice(cats, 2000, p=[0.4, 0.3, 0.2, 0.1])
        same = rng.choice(cats, 500, p=[0.4, 0.3, 0.2, 0.1])
        moved = rng.choice(cats, 500, p=[0.1, 0.2, 0.3, 0.4])
    for current, drift in ((same, False), (moved, True)):
        res = test.two_sample(ref, current)
        assert res.test == cls.name and (res.n_reference, res.n_current) == (2000, 500)
        assert math.isfinite(res.statistic) and math.isfinite(res.distance)
        assert res.p_value is None or 0.0 <= res.p_value <= 1.0
        assert _is_drift(res.p_value, res.distance, cls.default_threshold) is drift, (cls.name, res)


def test_multivariate_test_contract() -> None:
    rng = np.random.default_rng(9)
    ref = rng.normal(size=(600, 3))
    same, moved = rng.normal(size=(300, 3)), rng.normal(0.8, 1.0, size=(300, 3))
    tests: dict[str, Callable[[np.ndarray], Any]] = {
        "mmd": MMD(ref, permutations=200).test,
        "classifier": lambda w: ClassifierTwoSample().test(ref, w),
    }
    assert set(tests) == set(MULTIVARIATE), "a multivariate test without a contract case"
    for name, run in tests.items():
        assert run(same).p_value >= 0.01, name
        assert run(moved).p_value < 0.01, name


# -- performance estimators ----------------------------------------------------------------
def _classifier(rng: np.random.Generator, n: int, hard: bool = False) -> Sample:
    x = rng.uniform(-0.3, 0.3, (n, 1)) if hard else rng.normal(0, 1.5, (n, 1))
    p = _sigmoid(x[:, 0])
    return Sample(scores=p, labels=(rng.random(n) < p).astype(int), features=x)


def _regressor(rng: np.random.Generator, n: int, hard: bool = False) -> Sample:
    x = rng.normal(0, 1, (n, 1))
    if hard:
        x = x[np.abs(x[:, 0]) > 1.2]
    y = x[:, 0] + rng.normal(size=len(x)) * (0.2 + np.abs(x[:, 0]))
    return Sample(predictions=x[:, 0], labels=y, features=x)


ESTIMATOR_DATA = {"CBPE": _classifier, "PAPE": _classifier, "DLE": _regressor}


@pytest.mark.parametrize(
    "cls",
    sorted(concrete_subclasses(PerformanceEstimator), key=_name),
    ids=_name,
)
def test_performance_estimator_contract(cls: type[PerformanceEstimator]) -> None:
    rng = np.random.default_rng(10)
    data = ESTIMATOR_DATA[cls.__name__]
    est = cls().fit(data(rng, 3000))  # type: ignore[call-arg]  # subclasses default their metrics
    for window, alarm in ((data(rng, 800), False), (data(rng, 3000, hard=True), True)):
        unlabelled = Sample(window.scores, window.predictions, None, window.features)
        estimates = est.estimate(unlabelled)
        assert estimates and all(math.isfinite(e.value) for e in estimates)
        assert any(e.alarm for e in estimates) is alarm, (cls.__name__, [e.to_dict() for e in estimates])


# -- GPU health rules ----------------------------------------------------------------------
RULE_SCENARIOS = {
    "ClocksHeldDown": ("clocks_low", 60),
    "UncorrectedEcc": ("ecc_uncorrected", 60),
    "GpuLost": ("fall_off_bus", 40),
    "MemoryRepair": ("memory_repair", 20),
    "NvlinkErrors": ("nvlink_errors", 90),
    "PcieLinkDowntrained": ("pcie_downtrained", 60),
    "PcieReplays": ("pcie_replay", 120),
    "PowerOverLimit": ("power_over_limit", 30),
    "SustainedSlowdown": ("thermal_slowdown", 120),
    "OverTemperature": ("thermal_slowdown", 120),
    "XidEvents": ("xid_mixed", 40),
}


def _only(cls: type[Rule]) -> GpuHealthDetector:
    det = GpuHealthDetector()
    det.rules = [r for r in det.rules if type(r) is cls]
    assert det.rules, f"{cls.__name__} is not built by default"
    return det


@pytest.fixture(scope="module")
def healthy_gpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, float]]:
    store = DuckDBStore(tmp_path_factory.mktemp("healthy"))
    sim = Simulation.start(builtin_scenario("healthy"), store)
    sim.run(120, 2.0)
    yield store, sim.now
    store.close()


@pytest.mark.parametrize("cls", sorted(concrete_subclasses(Rule), key=_name), ids=_name)
def test_gpu_rule_contract(cls: type[Rule], healthy_gpus: tuple[Store, float], tmp_path: Path) -> None:
    store, now = healthy_gpus
    assert _only(cls).evaluate(store, now) == [], f"{cls.__name__} reported on healthy GPUs"
    scenario, seconds = RULE_SCENARIOS[cls.__name__]
    faulty = DuckDBStore(tmp_path)
    try:
        sim = Simulation.start(builtin_scenario(scenario), faulty)
        sim.run(seconds, 2.0)
        det = _only(cls)
        found = det.evaluate(faulty, sim.now)
        rule = det.rules[0]
        assert found, f"{cls.__name__} missed its fault ({scenario})"
        for f in found:
            check_finding(f)
            assert f.evidence["rule"] == rule.name and f.key.split(":")[0] == rule.name
    finally:
        faulty.close()


# -- nothing forgotten ---------------------------------------------------------------------
def test_every_detector_has_a_case() -> None:
    """A detector class added to the packages must get a case above."""
    families: list[tuple[type, set[str]]] = [
        (Detector, {c.__name__ for c in STORE_CASES}),
        (DriftDetector, {c.__name__ for c in STREAM_CASES} | {"AlibiOnline"}),  # alibi: optional extra
        (PerformanceEstimator, set(ESTIMATOR_DATA)),
        (Rule, set(RULE_SCENARIOS)),
        (StreamingEvaluator, set(STREAMING_CASES)),
    ]
    for base, cased in families:
        found = {c.__name__ for c in concrete_subclasses(base)}
        assert found <= cased, f"{base.__name__} without a contract case: {sorted(found - cased)}"
    assert set(KINDS) == set(MONITOR_CASES), (
        f"monitor kinds without a case: {set(KINDS) ^ set(MONITOR_CASES)}"
    )
