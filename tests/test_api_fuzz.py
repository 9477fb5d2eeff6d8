"""Schema-driven fuzzing of the running API: every route of its own /openapi.json.

schemathesis generates requests from the document the service serves (valid ones and ones that
break the schema), sends them over real sockets to a real ``mlvigil serve``, and checks each
answer: never a 5xx, the status, content type, headers and body as the document declares, and
invalid data rejected with a 4xx. Hypothesis then drives label posting and finding filters
directly, including names and values the schema cannot express. Bounded in examples and time.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import ServiceHandle  # noqa: E402
from tests.test_api import FULL_CONFIG  # noqa: E402

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Examples per operation and generation mode, and the wall-clock budget of the whole run.
EXAMPLES = 15
BUDGET_S = 35.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    handle = ServiceHandle(
        tmp_path_factory.mktemp("fuzz") / "data", FULL_CONFIG, {"MLVIGIL_AUTH_TOKEN": TOKEN}
    )
    handle.start()
    yield handle
    handle.kill()


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


def _fuzz(
    service: ServiceHandle, operation: Any, mode: Any, deadline: float, statuses: dict[tuple[str, int], int]
) -> int:
    """Send up to EXAMPLES generated requests for one operation in one mode; how many were sent."""
    from schemathesis.generation import GenerationMode

    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    sent = 0

    @_settings(EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal sent
        if time.monotonic() > deadline:
            return
        response = case.call_and_validate(base_url=service.api, checks=checks)
        sent += 1
        key = (mode.value, response.status_code)
        statuses[key] = statuses.get(key, 0) + 1

    try:
        run()
    except hypothesis.errors.Unsatisfiable:  # nothing to negate (an operation without inputs)
        assert mode is not GenerationMode.POSITIVE
    return sent


def test_schemathesis_finds_no_5xx_and_no_schema_violation(fuzz_service: ServiceHandle) -> None:
    from schemathesis.generation import GenerationMode

    # The token through schemathesis's own auth, so a case meant to go without it really does.
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearer": {"bearer": TOKEN}}}})
    schema = schemathesis.openapi.from_dict(fuzz_service.get("/openapi.json"), config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    deadline = time.monotonic() + BUDGET_S
    sent: dict[str, int] = {}
    statuses: dict[tuple[str, int], int] = {}
    # Valid requests for every operation first, then schema-violating ones while the budget lasts.
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            sent[f"{mode.value} {operation.label}"] = _fuzz(fuzz_service, operation, mode, deadline, statuses)
    total = sum(sent.values())
    negative = sum(n for key, n in sent.items() if key.startswith("negative"))
    elapsed = BUDGET_S - (deadline - time.monotonic())
    print(
        f"schemathesis: {total} requests ({negative} schema-violating) over {len(operations)} operations"
        f" in {elapsed:.0f}s; statuses {dict(sorted(statuses.items()))}"
    )
    positive = {key: n for key, n in sent.items() if key.startswith("positive")}
    assert all(positive.values()), [key for key, n in positive.items() if not n]
    assert not any(status >= 500 for _, status in statuses)
    assert ("positive", 401) not in statuses  # valid cases carry the token
    assert fuzz_service.get("/healthz")["status"] == "ok"


# -- hypothesis over what the schema cannot say: any label name, any value ------------------------
label_names = st.text(min_size=0, max_size=20)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _request(service: ServiceHandle, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    status, headers, answer = service.request(
        method, path, body, {"Content-Type": "application/json", **AUTH}
    )
    assert status < 500, (method, path, body, status, answer)
    assert headers["Content-Type"].startswith("application/json"), headers
    doc = json.loads(answer, parse_constant=lambda c: pytest.fail(f"{c} in a response"))
    if status >= 400:
        assert doc["error"], doc
    return status, doc


@_settings(60)
@given(filters=st.dictionaries(label_names, st.text(max_size=30), max_size=4))
def test_findings_filters_answer_200_or_400_with_a_reason(fuzz_service: ServiceHandle, filters: dict) -> None:
    status, doc = _request(fuzz_service, "GET", "/api/v1/findings?" + urllib.parse.urlencode(filters))
    assert status in (200, 400)
    if status == 200:
        assert doc["findings"] == []


@_settings(60)
@given(
    items=st.lists(
        st.dictionaries(st.sampled_from(["request_id", "label", "ts", "service", "model", "x"]), values),
        max_size=3,
    )
)
def test_label_posting_stores_valid_and_rejects_invalid(fuzz_service: ServiceHandle, items: list) -> None:
    body = json.dumps({"labels": items}).encode()
    before = fuzz_service.stats()["labels"]
    status, doc = _request(fuzz_service, "POST", "/api/v1/labels", body)
    assert status in (202, 400), doc
    valid = bool(items) and all(
        isinstance(i.get("request_id"), str)
        and 0 < len(i["request_id"]) <= 256
        and "label" in i
        and set(i) <= {"request_id", "label", "ts", "service", "model"}
        and (i.get("ts") is None or (type(i["ts"]) in (int, float) and abs(i["ts"]) < float("inf")))
        and all(i.get(k) is None or isinstance(i[k], str) for k in ("service", "model"))
        and "NaN" not in json.dumps(i["label"])
        and "Infinity" not in json.dumps(i["label"])
        for i in items
    )
    assert (status == 202) == valid, (items, doc)
    expected = before + (len(items) if valid else 0)
    fuzz_service.wait_for(lambda: fuzz_service.stats()["labels"] == expected, timeout=10)
