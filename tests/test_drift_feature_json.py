"""The native extraction of feature windows (mlvigil_native over native/feature-json) gives
exactly the values and NULLs of the DuckDB SQL extraction it replaces, on a corpus of tricky
``features`` JSON texts (every edge case the SQL encodes) and thousands of generated ones."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest

from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore, queries

EDGE_CASES = [
    '{"a":1.5}',
    '{"a":"1.5"}',
    '{"a":" 1.5 "}',
    '{"a":true}',
    '{"a":false}',
    '{"a":null}',
    '{"a":[1]}',
    '{"a":{}}',
    '{"a":12345678901234567890123}',
    '{"a":18446744073709551615}',
    '{"a":9223372036854775808}',
    '{"a":-9223372036854775809}',
    '{"a":1e5}',
    '{"a":1E400}',
    '{"a":-1e400}',
    '{"a":-0}',
    '{"a":-0.0}',
    '{"a":2.50}',
    '{"a":1e-7}',
    '{"a":1.5e300}',
    '{"a":1,"a":2}',
    '{"a":1',
    "nope",
    "[1,2]",
    "5",
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":"x\\u00e9\\ud800"}',
    '{"a":"\\ud83d\\ude00"}',
    '{"a":1,}',
    '{"a":01}',
    '{"a":"inf"}',
    '{"a":"1e5"}',
    '{"a":"true"}',
    '{"a":1.0,"b":2}',
    '{"\\u0061":3}',
    '{"a b":1}',
    None,
    "",
    '{"a":" 2"}',
    '{"a":1.5} x',
    '{"a":1} {"b":2}',
    ' {"a":1} ',
    '{"a":"\\n\\t\\"\\\\\\/"}',
    '{"a":123456789012345678}',
    '{"a":1e20}',
    '{"a":1e38}',
    '{"a":-1e38}',
    '{"a":9.99e37}',
    '{"a":0.1}',
    '{"a":100000000000000000000000.0}',
    '{"a":1e21}',
    '{"a":1e22}',
    '{"a":1.5e21}',
    '{"a":1e-6}',
    '{"a":1.5e-6}',
    '{"a":0.000001}',
    '{"a":1.5e-5}',
    '{"a":123456.789e10}',
    '{"a":5e-324}',
    '{"a":1.7976931348623157e308}',
    '{"a":-2.5}',
    '{"a":"a\\u0000b"}',
    '{"a":"\x01"}',
    '{"a":[1,{"b":[]}],"b":{"a":1}}',
    '{"b":1,"a":"ü","a":3}',
    '{"a" : 7 }',
    '{"a":1e+5}',
    '{"a":1E-5}',
    '{"a":-}',
    '{"a":1.}',
    '{"a":.5}',
    '{"a":+1}',
    '{"a":tru}',
    '{"a":"\\u12"}',
    '{"a":"\\x"}',
    '{"a":1}\n',
    "{}",
    "null",
    '"str"',
    '{"a":[' * 40 + "]" * 40 + "}",
    '{"a":1, "c d":"e", "é":2.5, "t\\tab":"x"}',
    '{"a":1 /* c */}',
    "{'a':1}",
    '{"a":0x10}',
]
NAMES = ["a", "b", "c d", "é", "t\tab", "absent"]


def _number(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return str(rng.randint(-(10**6), 10**6))
    if kind == 1:
        return str(rng.randint(-(10**30), 10**30))
    if kind == 2:
        return repr(rng.uniform(-1e3, 1e3))
    if kind == 3:
        return f"{rng.choice(['', '-'])}{rng.randint(0, 999)}.{rng.randint(0, 99):0{rng.randint(1, 3)}d}"
    if kind == 4:
        mantissa = f"{rng.randint(1, 9)}" + (f".{rng.randint(0, 9999)}" if rng.random() < 0.6 else "")
        return f"{rng.choice(['', '-'])}{mantissa}{rng.choice('eE')}{rng.choice(['', '+', '-'])}{rng.randint(0, 330)}"
    if kind == 5:
        return repr(float(rng.randint(-(10**12), 10**12)))
    if kind == 6:
        return repr(rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 45))
    return rng.choice(["0", "-0", "0.0", "-0.0", "1e38", "1e37", "1e21", "1e-6", "1e-7", "1.0e2"])


def _value(rng: random.Random, depth: int = 0) -> str:
    kind = rng.randrange(10)
    if kind < 4:
        return _number(rng)
    if kind == 4:
        return json.dumps(rng.choice(["x", "1.5", "true", " 2", "", "ü", "02139", "a\nb", "😀", "\u2028"]))
    if kind == 5:
        return json.dumps(_number(rng))
    if kind == 6:
        return rng.choice(["true", "false", "null"])
    if kind == 7 and depth < 3:
        return "[" + ",".join(_value(rng, depth + 1) for _ in range(rng.randrange(3))) + "]"
    if kind == 8 and depth < 3:
        return "{" + ",".join(f'"{k}":{_value(rng, depth + 1)}' for k in rng.sample(NAMES, 2)) + "}"
    return rng.choice(["NaN", "-Infinity", "1e400", '"\\u00e9"', '"\\ud83d\\ude00"'])


def _doc(rng: random.Random) -> str | None:
    if rng.random() < 0.02:
        return None
    keys = [rng.choice(NAMES) for _ in range(rng.randrange(7))]
    space = rng.choice(["", " ", "\n "])
    text = "{" + ",".join(f"{space}{json.dumps(k)}{space}:{space}{_value(rng)}" for k in keys) + space + "}"
    if rng.random() < 0.03:
        text = text[: rng.randrange(len(text) + 1)]  # cut short: invalid
    if rng.random() < 0.02:
        text = text.replace("}", ",}", 1)  # a trailing comma DuckDB's reader accepts
    return text


def _corpus(n: int) -> list[str | None]:
    rng = random.Random(20)
    return EDGE_CASES + [_doc(rng) for _ in range(n)]


def _store(tmp_path: Any, docs: list[str | None]) -> DuckDBStore:
    n = len(docs)
    batch = RecordBatch()
    batch.columns["inferences"] = {
        "ts": [float(i) for i in range(n)],
        "service": ["s"] * n,
        "model": ["m"] * n,
        "model_version": [None if i % 3 else "v1" for i in range(n)],
        "request_id": [str(i) for i in range(n)],
        "features": docs,
        "prediction": [None] * n,
        "score": [None] * n,
        "latency_s": [None] * n,
        "source": ["t"] * n,
    }
    store = DuckDBStore(tmp_path)
    store.append(batch)
    return store


def _plain(col: Any) -> list[Any]:
    """A column as a list, NULL as None and a float as (value, sign) so -0.0 and NaN compare."""
    out = []
    for v in col.tolist():
        if isinstance(v, float):
            out.append(("nan",) if math.isnan(v) else (v, math.copysign(1.0, v)))
        else:
            out.append(v)
    return out


def _window(
    store: DuckDBStore, **kw: Any
) -> tuple[list[list[Any]], dict[str, list[Any]], dict[str, list[Any]]]:
    meta, num, txt = store.feature_window(where={"model": "m"}, **kw)
    return (
        [_plain(c) for c in meta.values()],
        {k: _plain(c) for k, c in num.items()},
        {k: _plain(c) for k, c in txt.items()},
    )


def _strict_json(text: str | None) -> bool:
    def refuse(word: str) -> Any:
        raise ValueError(word)

    try:
        # A lone surrogate escape reads in Python but cannot be encoded as UTF-8.
        json.dumps(json.loads(text or "", parse_constant=refuse), ensure_ascii=False).encode()
    except ValueError:  # UnicodeEncodeError included
        return False
    return True


@pytest.fixture
def native() -> Any:
    # Always built by the set-up: a missing function is a broken build, not a reason to skip.
    assert queries.extract_features is not None, (
        "mlvigil_native.extract_features is missing (scripts/setup.sh builds it)"
    )
    return queries.extract_features


def test_native_extraction_equals_the_sql(
    tmp_path: Any, native: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _corpus(4000)
    store = _store(tmp_path, docs)
    try:
        for kw in (
            {"numeric": NAMES, "text": NAMES},
            {"numeric": ["a", "b"], "text": ["c d", "a"]},
            {},
            {"numeric": NAMES, "text": NAMES, "last": 500},
            {"text": ["a"], "since": 100.0, "until": 2000.0},
        ):
            got = _window(store, **kw)
            with monkeypatch.context() as m:
                m.setattr(queries, "extract_features", None)
                want = _window(store, **kw)
            assert got[0] == want[0], kw
            assert got[1].keys() == want[1].keys() and got[2].keys() == want[2].keys(), kw
            for k in want[1]:
                bad = [
                    (docs[i], g, w)
                    for i, (g, w) in enumerate(zip(got[1][k], want[1][k], strict=True))
                    if g != w
                ]
                assert not bad, (kw, k, bad[:5])
            for k in want[2]:
                bad = [
                    (docs[i], g, w)
                    for i, (g, w) in enumerate(zip(got[2][k], want[2][k], strict=True))
                    if g != w
                ]
                assert not bad, (kw, k, bad[:5])
        # The corpus covers what the answers hinge on (else the comparison proves little).
        txt = _window(store, numeric=["a"], text=["a"])[2]["a"]
        assert {"True", "False", "1e-7", "1.5e300", "0", "12345678901234567890123", "😀"} <= set(txt)
    finally:
        store.close()


def test_native_settles_strict_json_itself(native: Any) -> None:
    """Only what strict JSON does not settle goes to the SQL: the native reader does the work."""
    import pyarrow as pa

    docs = _corpus(4000)
    # Numbers only (a steady monitor's numeric features): the rows left to the SQL are the
    # ones that are not strict JSON (DuckDB's reader is lenient; Python's takes NaN).
    _, unsure = native(pa.array(docs, type=pa.large_string()), NAMES, [])
    assert unsure and all(not _strict_json(docs[i]) for i in unsure)
    assert len(unsure) == sum(1 for d in docs if d is not None and not _strict_json(d))
    for doc in ('{"a":1.5,"b":"x","c d":true}', '{"a":-0,"a":"y"}', "[1]", None):
        batch, unsure = native(pa.array([doc], type=pa.large_string()), ["a"], ["b", "a"])
        assert unsure == []
    batch, unsure = native(pa.array(['{"a":1.5,"b":"x"}', '{"a":NaN}'], type=pa.string()), ["a"], ["b"])
    assert unsure == [1]
    assert batch.column("n0").to_pylist() == [1.5, None] and batch.column("s0").to_pylist() == ["x", None]
    assert np.isfinite(batch.column("n0").to_numpy(zero_copy_only=False)[0])
