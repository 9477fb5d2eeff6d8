"""Streaming detectors: run length between false alarms and detection delay."""

from __future__ import annotations

import numpy as np

from detectors.drift.streaming import ADWIN, OnlineCVM, PageHinkley


def test_online_cvm_false_alarms_arrive_at_the_configured_expected_run_time() -> None:
    rng = np.random.default_rng(0)
    ert = 100
    det = OnlineCVM(rng.normal(size=4000), window_size=20, ert=ert, n_bootstraps=3000, horizon=60)
    run_lengths = []
    since = 0
    stream = rng.normal(size=40_000)
    for x in stream:
        since += 1
        if det.update(x):
            run_lengths.append(since - 20)  # monitoring starts once the window is full
            since = 0
    mean_run = float(np.mean(run_lengths))
    assert 0.6 * ert <= mean_run <= 1.6 * ert, mean_run
    # A one-sd shift is caught within a window's length.
    det.update(0.0)
    delays = []
    for _ in range(20):
        det.window.clear()
        det.t = 0
        det.drift_detected = False
        for x in rng.normal(size=20):
            det.update(x)
        for i, x in enumerate(rng.normal(1.0, size=200)):
            if det.update(x):
                delays.append(i)
                break
    assert np.median(delays) <= 20


def test_adwin_stationary_then_change() -> None:
    rng = np.random.default_rng(1)
    quiet = sum(ADWIN(delta=0.002).update(float(x)) for x in rng.random(5000) < 0.2)
    assert quiet == 0
    adwin = ADWIN(delta=0.002)
    errors = np.r_[rng.random(3000) < 0.1, rng.random(2000) < 0.3]
    alarms = [i for i, e in enumerate(errors) if adwin.update(float(e))]
    assert alarms and 3000 <= alarms[0] < 3300
    assert abs(adwin.mean - 0.3) < 0.05  # the window now holds only the new regime


def test_page_hinkley_on_an_error_stream() -> None:
    rng = np.random.default_rng(2)
    ph = PageHinkley(delta=0.01, threshold=10.0)
    stream = np.r_[rng.random(2000) < 0.05, rng.random(500) < 0.25].astype(float)
    alarms = [i for i, x in enumerate(stream) if ph.update(x)]
    assert alarms and 2000 <= alarms[0] < 2120
