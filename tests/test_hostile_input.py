"""Hostile but contract-valid input cannot corrupt a decision, a restart or the log; input
outside the contract's numeric domain is refused naming the field."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api.servicer import create_server
from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.cli import main
from engine.contract import InputError, format_time, parse_snapshot
from engine.contract.snapshot import MAX_COUNT, MAX_INTERVAL, MAX_LATENCY_MS, MIN_INTERVAL
from engine.pipeline import Evaluator
from engine.policy import load_effective
from engine.service import Guard
from engine.store.sqlite import SqliteLog
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_effective([str(ROOT / "policies")])


def edited(row: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(row)
    *parents, last = path.split(".")
    target = out
    for key in parents:
        target = target[key]
    target[last] = value
    return out


# (id, field path, value): each outside the numeric domain, each reproduced against the running service
OUTSIDE = [
    ("interval-1e-300", "interval_seconds", 1e-300),
    ("interval-subnormal", "interval_seconds", 5e-324),
    ("interval-above-a-day", "interval_seconds", MAX_INTERVAL * 2),
    ("p95-1e308", "challenger.latency_ms.p95", 1e308),
    ("labeled-2-pow-62", "challenger.labeled", 2**62),
    ("requests-10-pow-400", "challenger.requests", 10**400),
    ("cache-response-1e308", "challenger.cache.response_time_ms", 1e308),
    ("count-above-domain", "champion.errors.timeout", MAX_COUNT + 1),
]


@pytest.mark.parametrize(("path", "value"), [pytest.param(p, v, id=i) for i, p, v in OUTSIDE])
def test_values_outside_the_domain_are_refused_naming_the_field(path: str, value: Any) -> None:
    """A number the engine cannot compute exactly is an InputError on its own field, with a short quote."""
    with pytest.raises(InputError) as refused:
        parse_snapshot(edited(snapshot(step=0), path, value))
    assert path in [v.field for v in refused.value.violations]
    assert len(str(refused.value)) < 400


def test_every_bad_field_is_reported_at_once() -> None:
    """Three bad fields give one error listing all three."""
    row = edited(snapshot(step=0), "challenger.requests", -1)
    row = edited(row, "champion.cpu_utilization", 2.0)
    row = edited(row, "interval_seconds", 0)
    with pytest.raises(InputError) as refused:
        parse_snapshot(row)
    fields = {v.field for v in refused.value.violations}
    assert fields == {"challenger.requests", "champion.cpu_utilization", "interval_seconds"}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2026-W48-2T10:00:00Z", id="week-date"),
        pytest.param("2026-328T10:00:00Z", id="ordinal-date"),
        pytest.param("2026-11-24T10:00Z", id="no-seconds"),
        pytest.param("20261124T100000Z", id="basic-format"),
        pytest.param("2026-11-24T10:00:60Z", id="leap-second"),
        pytest.param("2026-11-24T10:00:00+2400", id="offset-without-colon"),
        pytest.param("2026-11-24T10:00:00+24:00", id="offset-out-of-range"),
        pytest.param("\uff12\uff10\uff12\uff16-11-24T10:00:00Z", id="non-ascii-digits"),
    ],
)
def test_only_rfc_3339_times_are_accepted(text: str) -> None:
    """ISO 8601 forms that RFC 3339 does not allow are refused on `timestamp`."""
    with pytest.raises(InputError) as refused:
        parse_snapshot({**snapshot(step=0), "timestamp": text})
    assert refused.value.field == "timestamp"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-11-24T10:00:00.5+01:00", 1795510800.5),
        ("2026-11-24t09:00:00z", 1795510800.0),
        ("2026-11-24T09:00:00.123456789Z", 1795510800.123456),
    ],
)
def test_rfc_3339_variants_are_read(text: str, seconds: float) -> None:
    """Fractions, offsets and lower-case t/z are RFC 3339 and read to the microsecond."""
    assert parse_snapshot({**snapshot(step=0), "timestamp": text}).timestamp == pytest.approx(seconds, abs=1e-6)


def test_an_extreme_snapshot_leaves_nothing_behind_once_it_leaves_the_window() -> None:
    """One snapshot at the top of the domain, then healthy ones: after the window, accuracy reads as if it never was."""
    extreme = edited(snapshot(step=0), "challenger.labeled", MAX_COUNT)
    extreme = edited(extreme, "challenger.correct", MAX_COUNT)
    with_it, without = Evaluator(POLICY), Evaluator(POLICY)
    with_it.evaluate(parse_snapshot(extreme))
    without.evaluate(parse_snapshot(edited(edited(snapshot(step=0), "challenger.labeled", 0), "challenger.correct", 0)))
    for step in range(1, 80):
        got = with_it.evaluate(parse_snapshot(snapshot(step=step))).to_dict()
        want = without.evaluate(parse_snapshot(snapshot(step=step))).to_dict()
        if step > 31:  # 15 minutes of 30 s snapshots, and a bucket
            assert got["conditions"][0] == want["conditions"][0], step
            assert got["action"] == want["action"]


def test_replay_of_an_enormous_integer_decides_the_other_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An integer of 400 digits is one rejected line; every other line is still decided."""
    rows = [json.dumps(snapshot(step=step)) for step in range(3)]
    rows[1] = rows[1].replace('"requests": 120000', '"requests": 1' + "0" * 400, 1)
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(rows) + "\n")
    code = main(["replay", "--input", str(source), "--policies", str(ROOT / "policies")])
    captured = capsys.readouterr()
    assert code == 1
    assert len(captured.out.splitlines()) == 2
    assert "line 2: challenger.requests: must be at most" in captured.err
    assert "401 digits" in captured.err


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[grpc.Channel, Guard]]:
    guard = Guard(POLICY, SqliteLog.in_dir(tmp_path / "data"))
    server, port, _ = create_server(guard, "127.0.0.1:0", 4)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, guard
    channel.close()
    server.stop(2).wait()
    guard.close()


def test_undecodable_request_bytes_are_invalid_argument(served: tuple[grpc.Channel, Guard]) -> None:
    """Bytes that are not an EvaluateRequest are the caller's fault: INVALID_ARGUMENT, not INTERNAL."""
    channel, _ = served
    call = channel.unary_unary("/abguard.v1.RiskService/Evaluate")
    with pytest.raises(grpc.RpcError) as refused:
        call(b"\xff\xff\xff\xff\x0f\x01", timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("request: not an Evaluate request")


def test_a_huge_timestamp_is_quoted_briefly(served: tuple[grpc.Channel, Guard]) -> None:
    """A 10 KB timestamp is INVALID_ARGUMENT with a short excerpt, not RESOURCE_EXHAUSTED from the metadata limit."""
    channel, _ = served
    message = pb.Snapshot(test_id="t", timestamp="9" * 10_000)
    message.champion.requests = 1
    message.challenger.requests = 1
    with pytest.raises(grpc.RpcError) as refused:
        rpc.RiskServiceStub(channel).Evaluate(pb.EvaluateRequest(snapshot=message), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(refused.value.details() or "") < 400


def test_a_log_written_before_the_domain_still_starts(tmp_path: Path) -> None:
    """Rows that today's contract refuses (an older version logged them) are skipped on rebuild; the service starts."""
    log = SqliteLog.in_dir(tmp_path / "data")
    guard = Guard(POLICY, log)
    for step in range(3):
        guard.evaluate(snapshot(step=step))
    hostile = edited(snapshot(step=3), "interval_seconds", 1e-300)
    hostile = edited(hostile, "challenger.requests", 10**15)
    decision = guard.evaluate(snapshot(step=3))
    log.append(hostile, {**decision, "timestamp": "2026-11-24T09:02:30Z"}, 1795510950.0, 0.0, None)
    guard.close()

    events: list[dict[str, Any]] = []
    again = Guard(POLICY, SqliteLog.in_dir(tmp_path / "data"), on_event=events.append)
    assert again.rebuild() == 4
    assert [e["event"] for e in events] == ["rebuild_skipped_record"]
    assert "interval_seconds" in events[0]["why"]
    again.evaluate(snapshot(step=5))
    again.close()


# --- the property: random extremes inside the domain ------------------------------------------
COUNT = st.sampled_from([0, 1, 7, 999, MAX_COUNT // 3, MAX_COUNT])
FRACTION = st.sampled_from([0.0, 1e-12, 0.5, 0.999999, 1.0])
LATENCY = st.sampled_from([0.0, 1e-9, 1.5, 250.0, MAX_LATENCY_MS])


@st.composite
def arms(draw: st.DrawFn) -> dict[str, Any]:
    labeled = draw(COUNT)
    body: dict[str, Any] = {"requests": draw(COUNT), "labeled": labeled, "correct": draw(st.integers(0, labeled))}
    if draw(st.booleans()):
        p = sorted(draw(st.lists(LATENCY, min_size=3, max_size=3)))
        body["latency_ms"] = {"p50": p[0], "p95": p[1], "p99": p[2], "mean": draw(LATENCY)}
    else:
        body["latency_ms"] = {
            "bounds": [1e-6, 1.0, MAX_LATENCY_MS],
            "counts": draw(st.lists(COUNT, min_size=4, max_size=4)),
        }
    body["confidence_histogram"] = draw(st.lists(COUNT, min_size=10, max_size=10))
    body["errors"] = {k: draw(COUNT) for k in ("extraction", "serialization", "timeout", "cache")}
    attempted = draw(COUNT)
    body["retries"] = {"attempted": attempted, "failed": draw(st.integers(0, attempted))}
    body["cache"] = {
        "l1": {"hits": draw(COUNT), "misses": draw(COUNT)},
        "l4": {"hits": draw(COUNT), "misses": draw(COUNT)},
        "evictions": draw(COUNT),
        "entries": draw(COUNT),
        "response_time_ms": draw(LATENCY),
    }
    body["concurrent_requests"], body["queue_depth"] = draw(COUNT), draw(COUNT)
    body["cpu_utilization"], body["memory_utilization"] = draw(FRACTION), draw(FRACTION)
    body["duplicate_entity_rate"] = draw(FRACTION)
    return body


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    t = 1_795_000_000.0
    rows = []
    for _ in range(draw(st.integers(2, 25))):
        interval = draw(st.sampled_from([MIN_INTERVAL, 0.5, 30.0, 900.0, MAX_INTERVAL]))
        t += draw(st.sampled_from([0.0, MIN_INTERVAL, interval, 3 * interval]))
        rows.append(
            {
                "test_id": "extreme",
                "timestamp": f"{_stamp(t)}",
                "interval_seconds": interval,
                "rollout_percent": draw(st.sampled_from([0.0, 1e-300, 0.0001, 50.0, 99.9999, 100.0])),
                "champion": draw(arms()),
                "challenger": draw(arms()),
            }
        )
    return rows


def _stamp(t: float) -> str:
    return format_time(t)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=streams())
def test_extremes_inside_the_domain_never_break_a_decision_the_log_or_a_restart(rows: list[dict[str, Any]]) -> None:
    """No exception; each live decision equals a from-scratch replay of the same stream; the log rebuilds and serves."""
    with tempfile.TemporaryDirectory() as folder:
        guard = Guard(POLICY, SqliteLog.in_dir(folder))
        live = [guard.evaluate(row) for row in rows]
        guard.close()
        fresh = Evaluator(POLICY)
        replayed = [fresh.evaluate(parse_snapshot(row)).to_dict() for row in rows]
        assert json.loads(json.dumps(live)) == json.loads(json.dumps(replayed))
        for decision in live:
            assert all(c["status"] != "error" for c in decision["conditions"]), decision["reason"]
        again = Guard(POLICY, SqliteLog.in_dir(folder))
        again.rebuild()
        for row in rows:  # resent snapshots are answered from the log
            assert again.evaluate(row)["decision_id"] in {d["decision_id"] for d in live}
        again.close()


def test_a_restart_between_day_long_intervals_decides_as_if_nothing_stopped(tmp_path: Path) -> None:
    """With snapshots a day apart, a rebuilt test reads the same history as the live one: same decisions."""
    start = parse_snapshot(snapshot(step=0)).timestamp
    rows = [
        {**snapshot(step=0), "timestamp": format_time(start + 86_400 * step), "interval_seconds": 86_400}
        for step in range(8)
    ]
    uninterrupted = Evaluator(POLICY)
    want = [uninterrupted.evaluate(parse_snapshot(row)).to_dict() for row in rows]
    first = Guard(POLICY, SqliteLog.in_dir(tmp_path / "data"))
    got = [first.evaluate(row) for row in rows[:5]]
    first.close()
    second = Guard(POLICY, SqliteLog.in_dir(tmp_path / "data"))
    second.rebuild()
    got += [second.evaluate(row) for row in rows[5:]]
    second.close()
    assert json.loads(json.dumps(got)) == json.loads(json.dumps(want))
