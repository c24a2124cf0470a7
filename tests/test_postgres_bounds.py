"""Every PostgreSQL session abguard opens is bounded: a replica paused inside its transaction (here a
session that takes the chain head's row lock and goes quiet) makes the others answer at once that
the log cannot be written, instead of queueing behind it; the server ends the quiet transaction,
and serving resumes with nothing lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engine.service import Guard
from engine.store import LogWriteError
from engine.store.postgres import IDLE_IN_TRANSACTION_MS, LOCK_TIMEOUT_MS, PostgresLog, bounded
from tests.conftest import snapshot
from tests.support.shared import postgres_schema
from tests.test_service import POLICY


@pytest.fixture
def url() -> Iterator[str]:
    with postgres_schema() as schema_url:
        yield schema_url


def setting(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def test_sessions_carry_the_limits_and_keep_the_url_s_own_options(url: str) -> None:
    with psycopg.connect(bounded(url), autocommit=True) as conn:
        assert setting(conn, "lock_timeout") == str(LOCK_TIMEOUT_MS)  # in ms
        assert setting(conn, "idle_in_transaction_session_timeout") == str(IDLE_IN_TRANSACTION_MS)
        assert setting(conn, "search_path").startswith("abguard_test_")  # the URL's options still choose the schema
    overridden = url.replace("options=", "options=-clock_timeout%3D7s%20")
    with psycopg.connect(bounded(overridden), autocommit=True) as conn:
        assert setting(conn, "lock_timeout") == "7000"  # the URL's own setting wins
    with psycopg.connect(bounded(url, 5000, None), autocommit=True) as conn:
        assert (setting(conn, "lock_timeout"), setting(conn, "idle_in_transaction_session_timeout")) == ("5000", "0")


def test_a_quiet_transaction_holding_the_chain_head_neither_hangs_nor_loses_a_decision(url: str) -> None:
    guard = Guard(POLICY, PostgresLog(url))
    guard.rebuild()
    guard.evaluate(snapshot("bounded", 0))
    stalled = psycopg.connect(bounded(url))  # an abguard peer paused mid-append: its transaction holds the row lock
    stalled.execute("SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE")
    try:
        started = time.monotonic()
        with pytest.raises(LogWriteError):
            guard.evaluate(snapshot("bounded", 1))
        assert time.monotonic() - started < LOCK_TIMEOUT_MS / 1000 + 1  # told soon, not at the client's deadline
        deadline = time.monotonic() + IDLE_IN_TRANSACTION_MS / 1000 + 10
        while True:  # the server ends the quiet transaction; the guard's probe finds the log writable again
            try:
                decision = guard.evaluate(snapshot("bounded", 1))
                break
            except Exception:
                assert time.monotonic() < deadline, "still not serving after the quiet transaction's limit"
                time.sleep(0.25)
        assert decision["test_id"] == "bounded"
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            stalled.execute("SELECT 1")  # its session was ended by the server
        with psycopg.connect(url) as conn:
            logged = conn.execute("SELECT count(*) FROM decisions WHERE test_id = 'bounded'").fetchone()
        assert logged is not None and logged[0] == 2  # each decision logged once, the refused one never
    finally:
        stalled.close()
        guard.close()
