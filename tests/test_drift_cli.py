"""``mlvigil drift REFERENCE CURRENT``: table, JSON and HTML reports, the CI exit codes, and a
loud refusal (its own exit code, a plain message, an error in the JSON) for every input the
gate must not pass as "no drift"."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlvigil.app.cli import main

REPO = Path(__file__).resolve().parents[1]
EXIT_SCHEMA, EXIT_TOO_FEW_ROWS, EXIT_UNREADABLE = 3, 4, 5


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
    assert report["status"] == "drift" and report["exit_code"] == 1
    drifted_names = {f["feature"] for f in report["features"] if f["drifted"]}
    assert report["drifted"] and drifted_names == {"income", "city"}
    city = next(f for f in report["features"] if f["feature"] == "city")
    assert 0.15 < city["movement"]["unseen"]["d"] < 0.35

    out = tmp_path / "report.html"
    html = _drift(str(ref), str(drifted), "--format", "html", "--output", str(out), "--progress")
    assert html.returncode == 1 and "drift [" in html.stderr  # the progress bar, when asked for
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3 and "Drift detected" in page


# -- refusals -----------------------------------------------------------------------------------
N = 200


def _table(n: int = N, seed: int = 0, **override: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {
        "age": rng.normal(40, 10, n).round(2),
        "income": rng.lognormal(10, 1, n).round(2),
        "plan": rng.choice(["free", "pro", "team"], n),
        "clicks": rng.integers(0, 7, n),
    }
    cols.update(override)
    return cols


def _write(path: Path, cols: dict[str, Any]) -> Path:
    """A real CSV (header line, comma-separated) or Parquet file, by the path's suffix."""
    if path.suffix == ".parquet":
        pq.write_table(pa.table({k: pa.array(list(v)) for k, v in cols.items()}), path)
    else:
        names = list(cols)
        n = len(cols[names[0]])
        lines = [",".join(names)] + [",".join(str(cols[k][i]) for k in names) for i in range(n)]
        path.write_text("\n".join(lines) + "\n")
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real CLI entry point in this process: exit code, stdout, stderr."""
    code = main(["drift", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(
    capsys: pytest.CaptureFixture[str], ref: Path, cur: Path, code: int, kind: str, *extra: str
) -> tuple[str, dict[str, Any]]:
    """Run the gate as table and as JSON: the same exit code both times, a one-line reason on
    stderr (no traceback, no DuckDB internals) and the error in the JSON document."""
    got, out, err = _run(capsys, str(ref), str(cur), *extra)
    assert got == code, (got, out, err)
    assert err.startswith("mlvigil drift: ") and out == ""
    assert "Traceback" not in err and "read_csv" not in err and "LINE 1" not in err
    got, out, err_json = _run(capsys, str(ref), str(cur), "--format", "json", *extra)
    assert got == code
    doc = json.loads(out)
    assert doc["status"] == "error" and doc["exit_code"] == code and doc["drifted"] is None
    assert doc["error"]["kind"] == kind and doc["error"]["message"] in err_json
    return err, doc["error"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_renamed_columns_are_a_schema_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    ref = _write(tmp_path / f"ref{suffix}", _table())
    t = _table(seed=1)
    renamed = {"Age": t["age"], "income_usd": t["income"], "plan_name": t["plan"], "clicks": t["clicks"]}
    cur = _write(tmp_path / f"cur{suffix}", renamed)
    err, error = _refused(capsys, ref, cur, EXIT_SCHEMA, "schema_mismatch")
    assert error["missing_columns"] == ["age", "income", "plan"]
    assert error["extra_columns"] == ["Age", "income_usd", "plan_name"]
    assert "missing from current): age, income, plan" in err
    # Comparing only the shared column is allowed, and says so by passing.
    code, out, _ = _run(capsys, str(ref), str(cur), "--features", "clicks")
    assert code == 0 and "clicks" in out


def test_a_feature_in_one_file_only_is_a_schema_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = _write(tmp_path / "ref.csv", _table())
    t = _table(seed=1)
    del t["plan"]
    cur = _write(tmp_path / "cur.csv", t)
    err, error = _refused(capsys, ref, cur, EXIT_SCHEMA, "schema_mismatch", "--features", "age,plan")
    assert error["missing_columns"] == ["plan"] and "plan" in err
    # A name in neither file is a typo: a usage error that lists the columns there are.
    code, _, err = _run(capsys, str(ref), str(cur), "--features", "age,height")
    assert code == 2 and "height" in err and "age, income" in err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("rows", [0, 3])
def test_too_few_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, rows: int) -> None:
    ref = _write(tmp_path / "ref.parquet", _table())
    cur = _write(tmp_path / f"cur{suffix}", _table(n=rows, seed=1))
    err, error = _refused(capsys, ref, cur, EXIT_TOO_FEW_ROWS, "too_few_rows")
    assert error["rows"] == rows and error["min_rows"] == 50
    assert f"has {rows} rows" in err and "--min-rows" in err
    # The reference is held to the same minimum.
    _refused(capsys, cur, ref, EXIT_TOO_FEW_ROWS, "too_few_rows")
    if rows:
        code, out, _ = _run(capsys, str(ref), str(cur), "--min-rows", "3")
        assert code in (0, 1) and "3 current rows" in out


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.csv", _table())
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    err, _ = _refused(capsys, ref, empty, EXIT_TOO_FEW_ROWS, "empty")
    assert "empty.csv is empty (0 bytes)" in err


def test_ragged_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.csv", _table())
    lines = _write(tmp_path / "cur.csv", _table(seed=1)).read_text().splitlines()
    lines[7] = "41.5,1200.0,pro"  # one field short
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("\n".join(lines) + "\n")
    err, error = _refused(capsys, ref, ragged, EXIT_UNREADABLE, "malformed")
    assert error["line"] == 8 and "line 8 has 3 fields but the header has 4" in err


def test_csv_whose_last_line_is_longer_is_ragged_not_a_schema_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DuckDB's sniffer takes a longer last line for the header's shape; the gate still names
    the ragged line (exit 5), never 'different columns' (exit 3)."""
    ref = _write(tmp_path / "ref.csv", _table())
    lines = _write(tmp_path / "cur.csv", _table(seed=1)).read_text().splitlines()
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("\n".join([*lines, "1,2,pro,3,extra"]) + "\n")
    err, error = _refused(capsys, ref, ragged, EXIT_UNREADABLE, "malformed")
    assert error["line"] == len(lines) + 1 and "has 5 fields but the header has 4" in err


def test_non_csv_and_non_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.csv", _table())
    binary = tmp_path / "model.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    err, _ = _refused(capsys, ref, binary, EXIT_UNREADABLE, "not_csv")
    assert "is not a CSV file" in err
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("age,income,plan,clicks\n1,2,caf\xe9,3\n".encode("latin-1"))
    err, _ = _refused(capsys, ref, latin1, EXIT_UNREADABLE, "not_csv")
    assert "not UTF-8" in err
    fake = tmp_path / "cur.parquet"
    fake.write_text("age,income\n1,2\n")
    err, _ = _refused(capsys, ref, fake, EXIT_UNREADABLE, "not_parquet")
    assert "is not a Parquet file" in err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_number_column_turned_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    ref = _write(tmp_path / f"ref{suffix}", _table())
    income = [f"{x:.4f}" if i % 3 else "n/a" for i, x in enumerate(_table(seed=1)["income"])]
    cur = _write(tmp_path / f"cur{suffix}", _table(seed=1, income=income))
    err, error = _refused(capsys, ref, cur, EXIT_SCHEMA, "type_changed")
    assert "column 'income': the type changed from number to text (e.g. 'n/a'" in err
    assert error["changed_columns"] == [
        {"column": "income", "reference_type": "number", "current_type": "text", "current_example": "n/a"}
    ]


def test_text_after_the_type_sniffing_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DuckDB guesses a CSV column's type from a sample; one text value far below it is still
    reported as a type change, not as a conversion error or a crash."""
    n = 30_000
    ref = _write(tmp_path / "ref.csv", _table(n=n))
    clicks = _table(n=n, seed=1)["clicks"].astype(object)
    clicks[n - 5] = "many"
    cur = _write(tmp_path / "cur.csv", _table(n=n, seed=1, clicks=clicks))
    err, _ = _refused(capsys, ref, cur, EXIT_SCHEMA, "type_changed")
    assert "column 'clicks': the type changed from number to text (e.g. 'many'" in err


def test_duplicate_header_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.csv", _table())
    lines = _write(tmp_path / "cur.csv", _table(seed=1)).read_text().splitlines()
    lines[0] = "age,income,plan,age"
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join(lines) + "\n")
    err, _ = _refused(capsys, ref, dup, EXIT_UNREADABLE, "malformed")
    assert "the header names 'age' more than once" in err


def test_empty_text_values_are_missing_not_a_category(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An all-empty text column is 100% missing (drift), not a new category '?'."""
    ref = _write(tmp_path / "ref.csv", _table())
    cur = _write(tmp_path / "cur.csv", _table(seed=1, plan=[""] * N))
    code, out, _ = _run(capsys, str(ref), str(cur), "--format", "json")
    assert code == 1
    feats = {f["feature"]: f for f in json.loads(out)["features"]}
    assert feats["plan:missing"]["drifted"] and feats["plan:missing"]["movement"]["missing_rate"] == [
        0.0,
        1.0,
    ]
    assert "?" not in feats["plan"]["movement"]["unseen"]


def test_id_columns_get_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.csv", _table(request_id=np.arange(N)))
    cur = _write(tmp_path / "cur.csv", _table(seed=1, request_id=np.arange(N, 2 * N)))
    code, out, err = _run(capsys, str(ref), str(cur), "--format", "json")
    assert code == 1 and json.loads(out)["id_like_columns"] == ["request_id"]
    assert "note: 'request_id' has a different value in every reference row" in err
    assert "--exclude request_id" in err
    code, _, err = _run(capsys, str(ref), str(cur), "--exclude", "request_id")
    assert code == 0 and "note" not in err


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.csv", _table())
    err, _ = _refused(capsys, tmp_path / "nope.csv", ref, EXIT_UNREADABLE, "not_found")
    assert err.strip() == f"mlvigil drift: reference file {tmp_path / 'nope.csv'}: no such file"
    err, _ = _refused(capsys, ref, tmp_path, EXIT_UNREADABLE, "not_a_file")
    # A glob is a file name here, not a pattern DuckDB expands over many files.
    err, _ = _refused(capsys, ref, tmp_path / "*.csv", EXIT_UNREADABLE, "not_found")


def test_bounds_on_what_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.csv", _table())
    cur = _write(tmp_path / "cur.parquet", _table(seed=1))
    err, _ = _refused(capsys, ref, cur, EXIT_UNREADABLE, "too_many_rows", "--max-rows", "100")
    assert "more than 100 rows" in err and "--max-rows" in err
    err, _ = _refused(capsys, ref, cur, EXIT_UNREADABLE, "too_many_columns", "--max-columns", "3")
    assert "has 4 columns, over the limit of 3" in err
    err, _ = _refused(capsys, ref, cur, EXIT_UNREADABLE, "too_large", "--max-file-size", "1k")
    assert "over the limit of 1,024" in err
    wide = _write(tmp_path / "wide.csv", {f"c{i}": [1.0] * 60 for i in range(1500)})
    _refused(capsys, wide, wide, EXIT_UNREADABLE, "too_many_columns")


@pytest.mark.parametrize("fmt", ["table", "html"])
def test_a_refusal_replaces_an_earlier_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    ref = _write(tmp_path / "ref.csv", _table())
    out = tmp_path / "report.out"
    out.write_text("an earlier report: no drift")
    code, stdout, _ = _run(capsys, str(ref), str(tmp_path / "nope.csv"), "--format", fmt, "-o", str(out))
    assert code == EXIT_UNREADABLE and stdout == ""
    page = out.read_text()
    assert "no drift" not in page and "exit 5" in page and "no such file" in page


def test_the_real_command_refuses_with_its_exit_code(tmp_path: Path) -> None:
    """The same refusal through ``python -m mlvigil``, as a CI job runs it."""
    ref = _write(tmp_path / "ref.csv", _table())
    cur = _write(tmp_path / "cur.csv", _table(n=3))
    res = _drift(str(ref), str(cur), "--format", "json")
    assert res.returncode == EXIT_TOO_FEW_ROWS, res.stderr
    assert json.loads(res.stdout)["error"]["kind"] == "too_few_rows"
    assert res.stderr.startswith("mlvigil drift: current file") and "Traceback" not in res.stderr


# -- the parser ---------------------------------------------------------------------------------
def test_help_documents_every_exit_code() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "mlvigil", "drift", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0
    codes = set(re.findall(r"^\s+(\d)\s+\w", res.stdout, re.MULTILINE))
    assert codes == {"0", "1", "2", "3", "4", "5"}
    docs = (REPO / "docs" / "drift.md").read_text()
    for code in range(6):
        assert f"| {code} |" in docs


def test_test_choices_match_the_tests() -> None:
    from detectors.drift.cli import TEST_CHOICES
    from detectors.drift.stats import TEST_NAMES

    assert TEST_CHOICES == TEST_NAMES


@pytest.mark.parametrize("command", ["", "serve", "drift", "agent", "demo"])
def test_help_imports_no_heavy_module(command: str) -> None:
    """``--help`` builds only the chosen command's parser: no numpy, scipy, DuckDB, aiohttp."""
    script = (
        "import sys\nfrom mlvigil.app.cli import main\n"
        f"try:\n    main({[command, '--help'] if command else ['--help']!r})\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'scipy', 'duckdb', 'aiohttp', 'pynvml', 'pydantic', 'grpc')\n"
        "print('heavy=' + ','.join(m for m in heavy if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "usage: mlvigil" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "heavy="
    if command in ("serve", "demo"):
        assert "\n\n" in res.stdout.split("options:")[0].split("usage:")[1]  # a description


# -- the HTML report ----------------------------------------------------------------------------
def test_html_report_axes_and_category_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = _write(tmp_path / "ref.parquet", _table(n=600))
    cur = _write(tmp_path / "cur.csv", _table(n=600, seed=1))
    out = tmp_path / "report.html"
    code, _, _ = _run(capsys, str(ref), str(cur), "--format", "html", "-o", str(out))
    assert code in (0, 1)
    page = out.read_text()
    cards = dict(re.findall(r'<div class="card[^"]*"><h3>(\w+) .*?</h3>(<svg.*?</svg>)</div>', page))
    assert set(cards) == {"age", "income", "plan", "clicks"}

    def labels(svg: str) -> list[str]:
        return re.findall(r'text-anchor="(?:middle|start|end)" fill="#333">([^<]+)</text>', svg)

    # Integer categories in numeric order, not by share.
    assert labels(cards["clicks"]) == ["0", "1", "2", "3", "4", "5", "6"]
    # Numeric histograms have round values along the x axis and shares up the y axis.
    ages = [float(v) for v in labels(cards["age"])]
    assert len(ages) >= 3 and ages == sorted(ages) and all(v % 5 == 0 for v in ages)
    assert re.search(r'text-anchor="end" fill="#555">\d+(\.\d)?%</text>', cards["age"])
    # The plots scale with their card, so the page has no fixed-width blank column.
    assert 'width="100%"' in cards["age"] and "grid-template-columns" in page


def test_command_list_matches_the_commands_own_parsers() -> None:
    """``mlvigil --help`` lists the plugins' commands (mlvigil.app.plugins.COMMANDS) without importing them;
    the words must be the ones each command registers, and each has a description."""
    import argparse

    from mlvigil.app.cli import build_parser
    from mlvigil.app.plugins import COMMANDS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    listed = {a.dest: a.help for a in sub._choices_actions}
    assert listed == {name: cmd.help for name, cmd in COMMANDS.items()}
    assert all(sub.choices[name].description for name in COMMANDS)
