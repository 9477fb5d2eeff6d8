"""``mlvigil estimate``: offline estimation over two files, exit codes and reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlvigil.app.cli import main

pytestmark = pytest.mark.timeout(60)


def _write(path: Path, n: int, seed: int, hard_from: int | None = None, labels: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.5, n)
    if hard_from is not None:
        x[hard_from:] = rng.uniform(-0.3, 0.3, n - hard_from)
    p = 1 / (1 + np.exp(-3 * x))
    y = (rng.random(n) < p).astype(int)
    lines = ["x,p,truth" if labels else "x,p"]
    lines += [f"{a},{q}" + (f",{t}" if labels else "") for a, q, t in zip(x, p, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_drop_in_the_second_window_exits_1_and_shows_the_realised_value(tmp_path: Path, capsys) -> None:
    ref = _write(tmp_path / "ref.csv", 2000, 0)
    ana = _write(tmp_path / "ana.csv", 1000, 1, hard_from=500)
    args = ["estimate", str(ref), str(ana), "--metrics", "accuracy,auc", "--window", "500"]
    code = main([*args, "--label", "truth", "--score", "p", "--max-drop", "0.02"])
    text = capsys.readouterr().out
    assert code == 1
    lines = [line for line in text.splitlines() if line.startswith("rows")]
    assert len(lines) == 4 and "realised" in lines[0]
    assert "DROP" not in lines[0] and "DROP" in lines[2] and lines[2].startswith("rows 500-999  accuracy")

    code = main([*args, "--label", "truth", "--score", "p", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["method"] == "cbpe" and report["fit"]["calibration"]["ok"]
    first, second = (w["metrics"][0] for w in report["windows"])
    assert not first["alarm"] and second["alarm"] and second["value"] < first["value"] - 0.1


def test_unlabelled_analysis_without_a_drop_exits_0(tmp_path: Path, capsys) -> None:
    ref = _write(tmp_path / "ref.csv", 2000, 0)
    ana = _write(tmp_path / "ana.csv", 800, 2, labels=False)
    code = main(["estimate", str(ref), str(ana), "--label", "truth", "--score", "p", "--max-drop", "0.02"])
    out = capsys.readouterr().out
    assert code == 0 and "realised" not in out and "rows 0-799" in out


def test_unusable_inputs_say_why(tmp_path: Path, capsys) -> None:
    ref = _write(tmp_path / "ref.csv", 200, 0)
    ana = _write(tmp_path / "ana.csv", 100, 1)
    assert main(["estimate", str(ref), str(ana), "--score", "p"]) == 3
    assert "needs a 'label' column" in capsys.readouterr().err
    assert main(["estimate", str(tmp_path / "nope.csv"), str(ana)]) == 5
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["estimate", str(ref), str(ana), "--metrics", "speed"])
    assert exc.value.code == 2 and "unknown metric" in capsys.readouterr().err
