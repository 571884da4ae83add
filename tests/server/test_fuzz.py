"""Fuzzing every route's body, query and path over real HTTP, from the server's own OpenAPI
document (schemathesis 4 generates the requests, hypothesis drives it, derandomized).

No input may get a 5xx. Requests that fit the schema must also get a response the schema
documents (content type and body), and most of them must reach their handler (not 401). Requests
that do not fit it are only held to "no 5xx": schemathesis counts unknown query parameters and a
missing ``Authorization`` (which the session adds back) as invalid, and the server ignores the
one and never sees the other. Event streams (which never end) are the only routes left out; a
test below fails if a route appears that is neither fuzzed nor deliberately left out.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from live_support import LiveServer, assert_problem, running
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

logger = logging.getLogger(__name__)

STREAMS = {"GET /api/events", "GET /api/conversations/{conversation_id}/events"}
"""Operations left out: SSE streams answer forever."""

EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 12}
"""Examples per operation and mode (and as many again on a real conversation for routes under
``/api/conversations/{conversation_id}``): a few hundred requests in all."""

CHECKS = {
    GenerationMode.POSITIVE: [
        not_a_server_error,
        content_type_conformance,
        response_schema_conformance,
    ],
    GenerationMode.NEGATIVE: [not_a_server_error],
}

TOML = """\
[server]
max_body_bytes = 65536
heartbeat_interval = 0.5
"""


@dataclass
class Fuzzed:
    """What a run sent and found."""

    cases: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    """How often each status answered, by generation mode."""
    unbreakable: list[str] = field(default_factory=list)
    """Operations with no input that could be made invalid (no negative cases)."""


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("fuzz"), TOML, keys=("fuzzer",)) as server:
        yield server


@pytest.fixture(scope="module")
def schema(fuzz_server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/schema/openapi.json")


@pytest.fixture(scope="module")
def session(fuzz_server: LiveServer) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {fuzz_server.keys['fuzzer'][1]}"
        session.trust_env = False
        yield session


def operations(schema: Any) -> dict[str, Any]:
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    session: requests.Session,
    base_url: str,
    fuzzed: Fuzzed,
    **fixed: Any,
) -> None:
    strategy = operation.as_strategy(generation_mode=mode, **fixed)

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=10)
        fuzzed.cases += 1
        counts = fuzzed.statuses.setdefault(mode.value, {})
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS[mode])
        except Exception as exc:  # every finding is collected, and all reported at the end
            request = response.request
            fuzzed.failures.append(
                f"{mode.value} {request.method} {request.url} body={request.body!r:.300}\n"
                f"  -> {response.status_code} {response.text[:300]}\n  {str(exc)[:500]}"
            )

    try:
        run()
    except Unsatisfiable:  # no input of this operation can break its schema (none, or strings)
        assert mode is GenerationMode.NEGATIVE
        fuzzed.unbreakable.append(f"{operation.method.upper()} {operation.path}")


def test_every_operation_is_fuzzed_or_deliberately_left_out(schema: Any) -> None:
    found = set(operations(schema))
    assert found >= STREAMS, "an event stream moved: update STREAMS"
    assert len(found - STREAMS) >= 12, sorted(found)


def test_fuzzing_every_route_finds_no_server_error_and_no_nonconformance(
    fuzz_server: LiveServer,
    schema: Any,
    session: requests.Session,
    record_property: Callable[[str, object], None],
) -> None:
    conversation = session.post(f"{fuzz_server.url}/api/conversations", json={"title": "target"})
    assert conversation.status_code == 201, conversation.text
    real = {"conversation_id": conversation.json()["id"]}
    fuzzed = Fuzzed()
    began = time.perf_counter()
    for label, operation in sorted(operations(schema).items()):
        if label in STREAMS:
            continue
        for mode in EXAMPLES:
            _fuzz(operation, mode, session, fuzz_server.url, fuzzed)
            if "{conversation_id}" in operation.path and not label.startswith("DELETE"):
                _fuzz(operation, mode, session, fuzz_server.url, fuzzed, path_parameters=real)
    elapsed = time.perf_counter() - began
    record_property("fuzz_cases", fuzzed.cases)
    record_property("fuzz_seconds", round(elapsed, 1))
    summary = {mode: sorted(counts.items()) for mode, counts in fuzzed.statuses.items()}
    logger.info(
        "fuzzed %d requests in %.1f s; statuses by mode: %s", fuzzed.cases, elapsed, summary
    )
    findings = "\n".join(fuzzed.failures[:20])
    assert not fuzzed.failures, f"{len(fuzzed.failures)} findings:\n{findings}"
    assert fuzzed.cases >= 200
    all_statuses = [s for counts in fuzzed.statuses.values() for s in counts]
    assert not any(status >= 500 for status in all_statuses)
    positive = fuzzed.statuses["positive"]
    handled = sum(n for status, n in positive.items() if status != 401)
    assert handled > 0.8 * sum(positive.values()), positive  # the key was honoured
    assert "Traceback" not in fuzz_server.log()


# -- raw bodies and cursors, below what a schema can describe ----------------------------------

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes a hostile client might send as a JSON body: a JSON document with bytes spliced
    in (often inside a string: not UTF-8), or arrays nested up to 30,000 deep."""
    if draw(st.booleans()):
        depth = draw(st.integers(1, 30_000))
        return b"[" * depth + b"]" * depth
    document = json.dumps(draw(JSON_VALUE)).encode()
    at = draw(st.integers(0, len(document)))
    junk = draw(st.binary(min_size=1, max_size=4))
    return document[:at] + junk + document[at:]


def json_routes(conversation: str) -> list[tuple[str, str]]:
    return [
        ("POST", "/api/conversations"),
        ("PATCH", f"/api/conversations/{conversation}"),
        ("POST", f"/api/conversations/{conversation}/messages"),
        ("POST", "/v1/chat/completions"),
    ]


def test_raw_bodies_never_get_a_server_error(fuzz_server: LiveServer) -> None:
    with fuzz_server.client(fuzz_server.keys["fuzzer"][1]) as client:
        conversation = client.post("/api/conversations", json={}).json()["id"]
        seen: dict[int, int] = {}

        @settings(max_examples=50, derandomize=True, database=None, deadline=None)
        @given(body=raw_bodies())
        def send(body: bytes) -> None:
            for method, path in json_routes(conversation):
                response = client.request(
                    method, path, content=body, headers={"Content-Type": "application/json"}
                )
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                assert response.status_code < 500, (method, path, body[:200], response.text)
                if response.status_code >= 400:
                    assert_problem(response, response.status_code)

        send()
    assert sum(seen.values()) == 200
    assert seen.get(400, 0) > 0, seen


def test_forged_cursors_never_get_a_server_error(fuzz_server: LiveServer) -> None:
    with fuzz_server.client(fuzz_server.keys["fuzzer"][1]) as client:
        conversation = client.post("/api/conversations", json={}).json()["id"]
        listings = ["/api/conversations", f"/api/conversations/{conversation}/messages"]

        # integers of every size up to 100 bits (hypothesis alone rarely strays that far)
        sized = st.integers(0, 100).flatmap(lambda bits: st.integers(-(2**bits), 2**bits))
        number = sized | st.floats(allow_nan=False)
        shaped = st.tuples(number, st.text(max_size=8)).map(list) | st.tuples(number).map(list)

        @settings(max_examples=60, derandomize=True, database=None, deadline=None)
        @given(parts=shaped | st.lists(JSON_VALUE, max_size=3))
        def send(parts: list[object]) -> None:
            cursor = base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()
            for path in listings:
                response = client.get(path, params={"cursor": cursor})
                assert response.status_code < 500, (path, parts, response.text)
                if response.status_code >= 400:
                    assert_problem(response, 422, field="cursor")

        send()
