"""``mlvigil drift REFERENCE CURRENT``: table, JSON and HTML reports and the CI exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    n = 2000
    ref = tmp_path / "ref.parquet"
    pq.write_table(
        pa.table(
            {
                "age": rng.normal(40, 10, n),
                "income": rng.lognormal(10, 1, n),
                "city": rng.choice(["a", "b", "c"], n),
            }
        ),
        ref,
    )
    same = tmp_path / "same.csv"
    drifted = tmp_path / "drifted.csv"
    for path, mu, cities in ((same, 10.0, ["a", "b", "c"]), (drifted, 10.3, ["a", "b", "c", "d"])):
        age = rng.normal(40, 10, n)
        income = rng.lognormal(mu, 1, n)
        city = rng.choice(cities, n)
        lines = ["age,income,city"] + [f"{a},{i},{c}" for a, i, c in zip(age, income, city, strict=True)]
        path.write_text("\n".join(lines) + "\n")
    return ref, same, drifted


def _drift(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlvigil", "drift", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_exit_codes_and_formats(tmp_path: Path) -> None:
    ref, same, drifted = _files(tmp_path)
    ok = _drift(str(ref), str(same))
    assert ok.returncode == 0, ok.stderr
    assert "no drift" in ok.stdout and "income" in ok.stdout

    bad = _drift(str(ref), str(drifted), "--format", "json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    drifted_names = {f["feature"] for f in report["features"] if f["drifted"]}
    assert report["drifted"] and drifted_names == {"income", "city"}
    city = next(f for f in report["features"] if f["feature"] == "city")
    assert 0.15 < city["movement"]["unseen"]["d"] < 0.35

    out = tmp_path / "report.html"
    html = _drift(str(ref), str(drifted), "--format", "html", "--output", str(out), "--progress")
    assert html.returncode == 1 and "drift [" in html.stderr  # the progress bar, when asked for
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3 and "Drift detected" in page


def test_unreadable_input_and_unknown_feature_exit_2(tmp_path: Path) -> None:
    ref, same, _ = _files(tmp_path)
    assert _drift(str(tmp_path / "nope.csv"), str(same)).returncode == 2
    res = _drift(str(ref), str(same), "--features", "age,height")
    assert res.returncode == 2 and "height" in res.stderr
