"""`abguard audit`: verify the decision log's hash chain, export the evidence of its rollbacks.

`verify` walks the chain and names the first record that was edited, deleted, reordered or
inserted. `export` writes, for every decision that started a rollback, the spec's compliance
fields with the record's seq, prev_hash and hash, so an auditor can check it against the chain
offline. `affected_users` is the challenger's rollout_percent in the stored snapshot (null when
the snapshot has none). The rollback records beside the log (`rollbacks.sqlite3`) add how each
rollback was carried out: `recovery_time` (seconds from the rollback to the first snapshot that
passed every recovery check), the recovery verdict and the process status. Manual rollbacks
(RollbackTest) are exported from those records with who asked; they are no decision of the log,
so their chain fields are null.
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from ..contract import InputError, format_time, parse_time
from ..rollback.process import Rollback
from ..store import BadRecord, LogError, LogOpenError, Record
from ..store.chain import GENESIS, Break, verify
from ..store.postgres import PostgresLog
from ..store.postgres_rollbacks import PostgresRollbackStore
from ..store.rollbacks import RollbackStore
from ..store.sqlite import SqliteLog
from .common import UsageError

OK, FINDINGS = 0, 1
LOG_FILE = "decisions.sqlite3"
ROLLBACKS_FILE = "rollbacks.sqlite3"
MANUAL = "manual_rollback"
ROLLS_BACK = frozenset({"rollback", "immediate_rollback"})
CSV_FIELDS = (
    "seq",
    "test_id",
    "rollback_timestamp",
    "decision_id",
    "trigger_reason",
    "triggered_by",
    "risk_conditions",
    "risk_score",
    "contributions",
    "affected_users",
    "recovery_time",
    "recovery_status",
    "rollback_status",
    "requested_by",
    "policy_name",
    "policy_version",
    "policy_digest",
    "prev_hash",
    "hash",
)


def add_parser(commands: Any) -> None:
    audit = commands.add_parser("audit", help="verify the decision log's hash chain, export rollback evidence")
    verbs = audit.add_subparsers(dest="verb", required=True, metavar="VERB")

    check = verbs.add_parser("verify", help="walk the hash chain; name the first edited, deleted or moved record")
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", metavar="DIR", help="the folder holding decisions.sqlite3")
    where.add_argument("--log", metavar="URL", help="the shared decision log, postgresql://... (as serve --log)")
    check.set_defaults(run=run_verify)

    export = verbs.add_parser("export", help="compliance evidence of every rollback, with its chain hashes")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", metavar="DIR", help="the folder holding decisions.sqlite3")
    source.add_argument("--log", metavar="URL", help="the shared decision log, postgresql://... (as serve --log)")
    export.add_argument("--test", default=None, metavar="TEST_ID", help="only this test's rollbacks")
    export.add_argument("--since", default=None, metavar="RFC3339", help="only rollbacks at or after this time")
    export.add_argument("--format", choices=("json", "csv"), default="json")
    export.set_defaults(run=run_export)


def run_verify(args: argparse.Namespace) -> int:
    with _opened(args.data_dir) if args.data_dir else _shared(args.log) as log:
        verdict = verify(log.chain_rows(), log.chain_links(), log.chain_counter())
    if verdict.broken is None:
        print(f"intact: {verdict.records} records, head {verdict.head}")
        return OK
    print(f"tampered: {_describe(verdict.broken)}")
    print(f"(the {verdict.records} records before it are intact, head {verdict.head})")
    return FINDINGS


def run_export(args: argparse.Namespace) -> int:
    since = None
    if args.since is not None:
        try:
            since = parse_time(args.since, "--since")
        except InputError as error:
            raise UsageError(str(error)) from None
    with _opened(args.data_dir) if args.data_dir else _shared(args.log) as log:
        records = [e for e in log.rollbacks(args.test, since) if started_rollback(e.decision)]
        head = log.chain_links()[-1:]
    carried_out = _rollback_records(Path(args.data_dir)) if args.data_dir else _shared_records(args.log)
    rows = [
        with_process(evidence(record), carried_out.get(str(record.decision.get("decision_id")))) for record in records
    ]
    manual = [r for r in carried_out.values() if r.trigger == MANUAL and (args.test is None or r.test_id == args.test)]
    rows += [manual_evidence(r) for r in manual if since is None or parse_time(r.decided_at) >= since]
    rows.sort(key=lambda row: (parse_time(row["rollback_timestamp"]), row["test_id"]))
    chain_head = head[0].hash if head and head[0].hash else GENESIS
    if args.format == "json":
        document = {"chain_head": chain_head, "records": rows}
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        write_csv(rows, sys.stdout)
    return OK


def started_rollback(decision: dict[str, Any]) -> bool:
    """A decision that rolled its test back: an enforced rollback, not the repeat a rolled-back test gets
    (the guard's own test for writing rollback evidence)."""
    return (
        decision.get("action") in ROLLS_BACK
        and bool(decision.get("enforced"))
        and decision.get("triggered_by") != "rolled_back_test"
    )


def evidence(record: Record) -> dict[str, Any]:
    """The spec's compliance fields for one rollback, with where it sits in the chain."""
    decision = record.decision
    conditions = decision.get("conditions") or []
    policy = decision.get("policy") or {}
    return {
        "test_id": record.test_id,
        "rollback_timestamp": decision.get("timestamp"),
        "decision_id": decision.get("decision_id"),
        "trigger_reason": decision.get("reason"),
        "triggered_by": decision.get("triggered_by"),
        "risk_conditions": [c["name"] for c in conditions if c.get("status") in ("triggered", "critical")],
        "performance_impact": {
            "risk_score": decision.get("risk_score"),
            "contributions": {c["name"]: c.get("contribution") for c in conditions},
        },
        "affected_users": record.snapshot.get("rollout_percent"),
        "recovery_time": None,
        "recovery_status": None,
        "rollback_status": None,
        "requested_by": "abguard",
        "policy": {"name": policy.get("name"), "version": policy.get("version"), "digest": policy.get("digest")},
        "seq": record.seq,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def with_process(row: dict[str, Any], record: Rollback | None) -> dict[str, Any]:
    """The evidence with how its rollback was carried out, when the rollback records hold it."""
    if record is None:
        return row
    recovery = record.recovery
    return {
        **row,
        "recovery_time": recovery.recovery_seconds if recovery is not None else None,
        "recovery_status": recovery.status if recovery is not None else None,
        "rollback_status": "complete" if record.complete() else "incomplete",
        "requested_by": record.requested_by,
    }


def manual_evidence(record: Rollback) -> dict[str, Any]:
    """A rollback asked for by hand: the rollback record's fields; it is no decision of the chained log."""
    row: dict[str, Any] = {
        "test_id": record.test_id,
        "rollback_timestamp": record.decided_at,
        "decision_id": record.decision_id,  # the test's last decision when it was asked for
        "trigger_reason": record.reason,
        "triggered_by": MANUAL,
        "risk_conditions": [],
        "performance_impact": {"risk_score": None, "contributions": {}},
        "affected_users": None,
        "recovery_time": None,
        "recovery_status": None,
        "rollback_status": None,
        "requested_by": record.requested_by,
        "policy": {"name": None, "version": None, "digest": None},
        "seq": None,
        "prev_hash": None,
        "hash": None,
    }
    return with_process(row, record)


def _rollback_records(data_dir: Path) -> dict[str, Rollback]:
    """The rollback records beside the log, by rollback id; none when the service kept none."""
    path = data_dir / ROLLBACKS_FILE
    if not path.is_file():
        return {}
    try:
        store = RollbackStore(path)
    except sqlite3.Error as error:  # not a database: the evidence stays exportable without it
        print(f"abguard audit: {path}: left out: {error}", file=sys.stderr)
        return {}
    try:
        return {record.rollback_id: record for record in store.listed(None, limit=None)}
    finally:
        store.close()


def _shared_records(url: str) -> dict[str, Rollback]:
    """The rollback records beside the shared log, by rollback id."""
    try:
        store = PostgresRollbackStore(url, pool_size=1)
    except LogOpenError as error:
        raise UsageError(str(error)) from None
    try:
        return {record.rollback_id: record for record in store.listed(None, limit=None)}
    finally:
        store.close()


def write_csv(rows: list[dict[str, Any]], out: IO[str]) -> None:
    """One row per rollback; list fields joined by ';', contributions as name=value."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        impact, policy = row["performance_impact"], row["policy"]
        flat = {
            **row,
            "risk_conditions": ";".join(row["risk_conditions"]),
            "risk_score": impact["risk_score"],
            "contributions": ";".join(f"{name}={value}" for name, value in impact["contributions"].items()),
            "policy_name": policy["name"],
            "policy_version": policy["version"],
            "policy_digest": policy["digest"],
        }
        writer.writerow(["" if flat[name] is None else flat[name] for name in CSV_FIELDS])


def _describe(found: Break) -> str:
    if found.test_id is None:
        return f"{found.kind}: {found.detail}"
    when = format_time(found.event_time) if isinstance(found.event_time, int | float) else repr(found.event_time)
    return f"{found.kind}: seq {found.seq} (test {found.test_id}, {when}): {found.detail}"


def _unreadable(record: BadRecord) -> None:
    print(f"abguard audit: seq {record.seq} (test {record.test_id}) left out: {record.why}", file=sys.stderr)


@contextmanager
def _shared(url: str) -> Iterator[PostgresLog]:
    """The replicas' PostgreSQL decision log; UsageError when it cannot be opened or read."""
    with _using(lambda: PostgresLog(url, _unreadable, pool_size=1)) as log:
        yield log


@contextmanager
def _opened(data_dir: str) -> Iterator[SqliteLog]:
    """The data dir's decision log (a log from before the chain is upgraded); UsageError when there is none."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise UsageError(f"no such data folder: {data_dir}")
    if not (folder / LOG_FILE).is_file():
        raise UsageError(f"no decision log in {data_dir} ({LOG_FILE})")
    with _using(lambda: SqliteLog(folder / LOG_FILE, _unreadable)) as log:
        yield log


AnyLog = TypeVar("AnyLog", SqliteLog, PostgresLog)


@contextmanager
def _using(open_log: Callable[[], AnyLog]) -> Iterator[AnyLog]:
    """A log opened for reading: its failures as UsageError, closed after."""
    try:
        log = open_log()
    except LogOpenError as error:
        raise UsageError(str(error)) from None
    try:
        yield log
    except LogError as error:
        raise UsageError(str(error)) from None
    finally:
        with suppress(LogError):  # a busy checkpoint while the service writes changes nothing we read
            log.close()
