"""Hostile input, property-based (issue 10, "Proofs"), against a real worker.

Hypothesis generates the events up front (15 of each kind below, 165 in all), and
they go to the requests topic as one batch, with a plain valid request
between every few of them.  Then:

- every event with a readable request_id gets exactly one response
  (`invalid` for a bad one, never `invalid` for a good one);
- every event whose request_id cannot be read gets a dead letter with a
  reason, and so does every invalid one;
- no valid event is dead-lettered, and the plain valid requests are all served.

Kinds: wrong types, unknown tiers in tags or region, duplicate request ids,
huge strings (under and over the size limit), NaN and infinity, control
characters, Avro requests, the out-of-bounds values of issue 10 item 2 (deadline, created_at,
nesting, invalid UTF-8), and events with no readable request_id at all.

Run with HOSTILE_SEED=<n> to replay the seed a run printed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from schemas.codec import encode_avro
from schemas.events import Request
from streams.ops.broker import EmbeddedBroker
from tests.conftest import harness_for, pipeline_config, scripted_tier

pytestmark = pytest.mark.asyncio(loop_scope="session")

MAX_REQUEST_BYTES = 100_000
CASES_PER_KIND = 15
#: a plain valid request goes out after every this many generated events
PLAIN_EVERY = 5
RESPONSE_WAIT_S = 120.0

#: "served": must be served; "answered": served or unavailable, never invalid;
#: "invalid": answered invalid and dead-lettered; "dead": dead-lettered, no id to answer
Expect = Literal["served", "answered", "invalid", "dead"]


@dataclass(frozen=True)
class Case:
    kind: str
    expect: Expect
    #: the payload, given the request_id the test assigns (ignored by "dead" cases)
    make: Callable[[str], bytes]
    copies: int = 1


def doc_case(kind: str, expect: Expect, build: Callable[[str], dict[str, Any]]) -> Case:
    return Case(kind, expect, lambda rid: json.dumps(build(rid)).encode())


def valid(rid: str, **fields: Any) -> dict[str, Any]:
    return {"request_id": rid, "input": {"prompt": "hello"}, **fields}


identifier = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]),
    min_size=1,
    max_size=40,
)
control = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.sampled_from(["\x7f", "\x85"])

WRONG_TYPES: dict[str, list[Any]] = {
    "tenant": [5, None, [], {}, "", "x" * 129],
    "input": ["text", [], 5, None, True],
    "params": [[], "x", 5],
    "deadline_ms": ["abc", [1], {}, -5, 0, 1.5],
    "max_cost_usd": ["x", [], -1],
    "tags": ["pii", [1], [None], {}],
    "region": [5, [], {}, ""],
    "created_at": ["yesterday", [], {}, "2026-13-45T00:00:00Z"],
    "surprise": [1, "field"],
}


@st.composite
def wrong_type(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(sorted(WRONG_TYPES)))
    value = draw(st.sampled_from(WRONG_TYPES[name]))
    copies = draw(st.sampled_from([1, 1, 2]))  # sometimes a duplicate id, bytes and all
    case = doc_case(f"wrong type: {name}", "invalid", lambda rid: valid(rid, **{name: value}))
    return Case(case.kind, case.expect, case.make, copies)


@st.composite
def unknown_tier_or_region(draw: st.DrawFn) -> Case:
    tags = draw(st.lists(identifier.map(lambda t: f"tier:{t}"), min_size=1, max_size=5))
    region = draw(st.none() | identifier)
    return doc_case(
        "unknown tier in tags / region",
        "answered",
        lambda rid: valid(rid, tags=tags, region=region),
    )


@st.composite
def duplicate_valid(draw: st.DrawFn) -> Case:
    prompt = draw(st.text(max_size=200))
    case = doc_case(
        "duplicate id", "served", lambda rid: {"request_id": rid, "input": {"p": prompt}}
    )
    return Case(case.kind, case.expect, case.make, copies=draw(st.integers(2, 3)))


@st.composite
def huge_string(draw: st.DrawFn) -> Case:
    size = draw(st.integers(1_000, MAX_REQUEST_BYTES * 3 // 2))
    pad = "x" * size
    if size < MAX_REQUEST_BYTES - 200:
        return doc_case(
            "huge string, under the limit", "served", lambda rid: valid(rid, params={"pad": pad})
        )
    over = "x" * max(size, MAX_REQUEST_BYTES)
    if draw(st.booleans()):
        return doc_case(
            "huge string, over the limit", "invalid", lambda rid: valid(rid, params={"pad": over})
        )
    # The id after more than 64 KiB of padding: not readable from the bounded prefix.
    return doc_case(
        "huge string before the id", "dead", lambda rid: {"input": {"pad": over}, "request_id": rid}
    )


@st.composite
def huge_key(draw: st.DrawFn) -> Case:
    name = "k" * draw(st.integers(100, 50_000)) + draw(control)
    return doc_case("huge unknown field name", "invalid", lambda rid: {**valid(rid), name: 1})


@st.composite
def not_finite(draw: st.DrawFn) -> Case:
    bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    features = draw(st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=64))
    at = draw(st.integers(0, len(features)))
    features.insert(at, bad)
    where = draw(st.sampled_from(["features", "max_cost_usd", "literal"]))
    if where == "features":
        return doc_case(
            "NaN / infinity", "invalid", lambda rid: valid(rid, input={"features": features})
        )
    if where == "max_cost_usd":
        return doc_case("NaN / infinity", "invalid", lambda rid: valid(rid, max_cost_usd=bad))
    return Case(
        "NaN / infinity",
        "invalid",
        lambda rid: b'{"request_id": %s, "input": {"v": 1e999}}' % json.dumps(rid).encode(),
    )


@st.composite
def control_characters(draw: st.DrawFn) -> Case:
    text = draw(st.text(alphabet=control, min_size=1, max_size=5))
    where = draw(st.sampled_from(["input", "input key", "request_id", "tenant", "region", "tags"]))
    if where == "input":
        return doc_case(
            "control chars in input", "answered", lambda rid: valid(rid, input={"p": text})
        )
    if where == "input key":
        return doc_case(
            "control chars in a key", "answered", lambda rid: valid(rid, input={text: 1})
        )
    if where == "request_id":
        return doc_case("control chars in request_id", "invalid", lambda rid: valid(rid + text))
    value: Any = [f"t{text}"] if where == "tags" else f"x{text}"
    return doc_case(
        f"control chars in {where}", "invalid", lambda rid: valid(rid, **{where: value})
    )


@st.composite
def out_of_bounds(draw: st.DrawFn) -> Case:
    what = draw(st.sampled_from(["deadline", "created_at", "nesting", "utf-8"]))
    if what == "deadline":
        deadline = draw(st.sampled_from([10**15, 2**63, 10**30, 86_400_001]))
        return doc_case(
            "deadline too large", "invalid", lambda rid: valid(rid, deadline_ms=deadline)
        )
    if what == "created_at":
        at = draw(
            st.sampled_from(
                [
                    "9999-12-31T23:59:59Z",
                    "9999-12-31T23:59:59-14:00",
                    "0001-01-01T00:00:00Z",
                    "1970-01-01T00:00:00Z",
                ]
            )
        )
        return doc_case("created_at out of range", "invalid", lambda rid: valid(rid, created_at=at))
    if what == "nesting":
        depth = draw(st.sampled_from([65, 1_000, 10_000]))
        nested = b"[" * depth + b"]" * depth
        return Case(
            "nested too deep",
            "invalid",
            lambda rid: (
                b'{"request_id": %s, "input": {"x": %s}}' % (json.dumps(rid).encode(), nested)
            ),
        )
    bad = draw(st.binary(min_size=1, max_size=4).filter(_not_utf8))
    return Case(
        "invalid UTF-8 in a field",
        "invalid",
        lambda rid: b'{"request_id": %s, "input": {"p": "a%sb"}}' % (json.dumps(rid).encode(), bad),
    )


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return b'"' not in raw and b"\\" not in raw
    return False


@st.composite
def unreadable(draw: st.DrawFn) -> Case:
    what = draw(
        st.sampled_from(
            [
                "missing",
                "int",
                "null",
                "list",
                "empty",
                "too long",
                "bad utf-8",
                "surrogate",
                "array",
                "binary",
                "text",
            ]
        )
    )
    ids: dict[str, bytes] = {
        "int": b"7",
        "null": b"null",
        "list": b'["a"]',
        "empty": b'""',
        "too long": json.dumps("x" * 257).encode(),
        "bad utf-8": b'"a\xffb"',
        "surrogate": b'"\\udc80"',
    }
    if what in ids:
        rid = ids[what]
        return Case(
            f"request_id {what}", "dead", lambda _: b'{"request_id": %s, "input": {}}' % rid
        )
    if what == "missing":
        return Case("request_id missing", "dead", lambda _: b'{"input": {"p": "no id"}}')
    if what == "array":
        items = draw(st.lists(st.integers() | st.text(max_size=5), max_size=5))
        return Case("not an object", "dead", lambda _: json.dumps(items).encode())
    if what == "binary":
        # A leading zero byte: no Avro request_id (length 0) and no JSON.
        raw = b"\x00" + draw(st.binary(max_size=200))
        return Case("binary garbage", "dead", lambda _: raw)
    text = draw(st.text(max_size=100).filter(lambda t: "request_id" not in t))
    return Case("text garbage", "dead", lambda _: ("{" + text).encode(errors="surrogatepass"))


@st.composite
def plain_but_odd(draw: st.DrawFn) -> Case:
    prompt = draw(st.text(max_size=300))
    tenant = draw(identifier)
    return doc_case(
        "unicode prompt and tenant",
        "served",
        lambda rid: valid(rid, tenant=tenant, input={"p": prompt}),
    )


@st.composite
def avro_request(draw: st.DrawFn) -> Case:
    """Schemaless Avro requests go through the same limits as JSON ones."""
    what = draw(st.sampled_from(["plain", "too large", "deadline", "nesting"]))
    prompt = draw(st.text(max_size=100))

    def make(rid: str) -> bytes:
        fields: dict[str, Any] = {"input": {"p": prompt}}
        if what == "too large":
            fields["params"] = {"pad": "x" * MAX_REQUEST_BYTES}
        if what == "deadline":
            fields["deadline_ms"] = 10**15
        if what == "nesting":
            deep: list[Any] = []
            for _ in range(80):
                deep = [deep]
            fields["input"] = {"deep": deep}
        return encode_avro(Request(request_id=rid, **fields))

    return Case(f"avro: {what}", "served" if what == "plain" else "invalid", make)


#: one strategy per kind of hostile input; each gets the same share of the examples
HOSTILE_KINDS: list[st.SearchStrategy[Case]] = [
    wrong_type(),
    unknown_tier_or_region(),
    duplicate_valid(),
    huge_string(),
    huge_key(),
    not_finite(),
    control_characters(),
    out_of_bounds(),
    unreadable(),
    plain_but_odd(),
    avro_request(),
]


def generate_cases(run_seed: int, per_kind: int) -> list[Case]:
    """Hypothesis's generation phase only: the examples are sent as one batch later."""
    cases: list[Case] = []
    for strategy in HOSTILE_KINDS:

        @seed(run_seed)
        @settings(
            max_examples=per_kind,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def collect(case: Case) -> None:
            cases.append(case)

        collect()
    random.Random(run_seed).shuffle(cases)
    return cases


@dataclass
class Sent:
    case: Case
    request_id: str
    partition: int
    offset: int


async def test_hostile_input_every_readable_request_is_answered_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    run_seed = int(os.environ.get("HOSTILE_SEED") or random.randrange(2**32))
    cases = generate_cases(run_seed, CASES_PER_KIND)
    plain = Case("plain valid request", "served", lambda rid: json.dumps(valid(rid)).encode())
    events: list[tuple[Case, str]] = []
    for n, case in enumerate(cases):
        events.append((case, f"h{n}"))
        if n % PLAIN_EVERY == PLAIN_EVERY - 1:
            events.append((plain, f"plain{n}"))

    tolerant = {"min_confidence": 0.5}  # no latency bound: a loaded machine must not matter
    config = pipeline_config(
        broker,
        tmp_path,
        [
            scripted_tier("primary", region="us", timeout_ms=10_000, accept=tolerant),
            scripted_tier("backup", region="eu", timeout_ms=10_000, accept=tolerant),
        ],
        worker={"max_request_bytes": MAX_REQUEST_BYTES},
        policy={"rules": [{"name": "eu-data", "regions": ["eu"], "same_region_only": True}]},
    )
    async with harness_for(config, tmp_path) as pipeline:
        producer = pipeline.client.producer
        topic = pipeline.client.topics.requests
        sends: list[tuple[Case, str, asyncio.Future[Any]]] = []
        expected_ids: dict[str, Case] = {}
        started = time.monotonic()
        for case, prefix in events:
            # The id's own text may be odd (control characters); the prefix keeps it unique.
            request_id = prefix
            payload = case.make(request_id)
            if case.kind == "control chars in request_id":
                request_id = json.loads(payload)["request_id"]
            if case.expect != "dead":
                expected_ids[request_id] = case
            for _ in range(case.copies):
                future = await producer.send(topic, payload, key=prefix.encode())
                sends.append((case, request_id, future))
        await producer.flush()
        sent = [
            Sent(case, rid, (meta := await future).partition, meta.offset)
            for case, rid, future in sends
        ]

        # Every readable id answered (or the wait runs out), then a moment for duplicates.
        deadline = time.monotonic() + RESPONSE_WAIT_S
        while time.monotonic() < deadline and not set(expected_ids) <= set(pipeline.responses):
            await asyncio.sleep(0.5)
        answered_s = time.monotonic() - started
        await asyncio.sleep(2.0)
        must_letter = [s for s in sent if s.case.expect in ("invalid", "dead")]
        dlq = pipeline.client.topics.dlq
        letters = {
            (letter["partition"], letter["offset"]): letter
            for letter in map(
                json.loads,
                [record.value for record in await pipeline.read_topic(dlq, len(must_letter), 60)],
            )
            if letter["source_topic"] == topic
        }

        lost = sorted(rid for rid in expected_ids if rid not in pipeline.responses)
        duplicated = sorted(rid for rid in expected_ids if pipeline.response_counts[rid] > 1)
        wrong_status = []
        for rid, case in expected_ids.items():
            response = pipeline.responses.get(rid)
            if response is None:
                continue
            ok = {
                "served": response.status == "served",
                "answered": response.status in ("served", "unavailable"),
                "invalid": response.status == "invalid" and bool(response.reason),
            }[case.expect]
            if not ok:
                wrong_status.append((case.kind, repr(rid), response.status, response.message))
        unlettered = [
            (s.case.kind, s.offset)
            for s in must_letter
            if not letters.get((s.partition, s.offset), {}).get("reason")
        ]
        letter_without_id = [
            (s.case.kind, s.offset)
            for s in must_letter
            if s.case.expect == "invalid"
            and letters.get((s.partition, s.offset), {}).get("request_id") != s.request_id
        ]
        wrongly_lettered = [
            (s.case.kind, s.offset)
            for s in sent
            if s.case.expect in ("served", "answered") and (s.partition, s.offset) in letters
        ]
        kinds = Counter(case.kind for case, _ in events)
        print(
            f"\nhostile input (seed {run_seed}): {len(sent)} events "
            f"({len(cases)} generated, {kinds['plain valid request']} plain valid), "
            f"{len(expected_ids)} readable ids, {len(must_letter)} to dead-letter; "
            f"lost {len(lost)}, duplicated {len(duplicated)}, wrong status {len(wrong_status)}, "
            f"not dead-lettered {len(unlettered)}; all answered in {answered_s:.1f} s"
        )
        print("kinds:", dict(sorted(kinds.items())))
        metrics = pipeline.worker.get("/stats/")
        counters = ("routed", "invalid", "duplicates", "stalled", "dead_letters_truncated")
        print("worker:", {name: metrics[name] for name in (*counters, "dead_letter_fallbacks")})
        assert not lost, f"no response for {lost[:10]}"
        assert not duplicated, f"more than one response for {duplicated[:10]}"
        assert not wrong_status, wrong_status[:10]
        assert not unlettered, unlettered[:10]
        assert not letter_without_id, letter_without_id[:10]
        assert not wrongly_lettered, wrongly_lettered[:10]
        assert metrics["stalled"] == 0 and pipeline.worker.get("/health/")["ready"]
        # ...and the worker still serves.
        assert (await pipeline.ask()).status == "served"
