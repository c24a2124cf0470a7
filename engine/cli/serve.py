"""`abguard serve`, and the gRPC client verbs `evaluate` and `health`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..api.convert import to_dict
from ..api.servicer import create_server
from ..api.v1 import risk_pb2 as pb
from ..api.v1 import risk_pb2_grpc as rpc
from ..compiled import is_compiled
from ..contract import InputError, parse_snapshot
from ..integrations.alertmanager import Alert, Severity
from ..metrics import Metrics
from ..policy.model import Policy
from ..policy.policyset import DEFAULT_PROFILE
from ..security.config import AuthFileError, load_auth, no_auth
from ..security.gate import Gate
from ..service import Guard, Rollbacks
from ..service.reload import Rejected, Reloader
from ..service.sinks import NOTIFY_SECRET_ENV, build_rollbacks
from ..state import configured_key
from ..store import LogError, LogOpenError
from ..store.sqlite import SqliteLog
from .client import add_connection_options, failure, open_channel
from .common import env_default, load_policy, positive_int
from .logging import log_event
from .render import table_header, table_row, to_json_dict
from .supervise import supervise

if TYPE_CHECKING:  # each of these is imported where used: a service without it does not load it at start
    from ..http import HttpServer
    from ..pull import PullConfig, Puller
    from ..security.tls import ServerTls
    from ..store.postgres import PostgresLog
    from ..store.redis_state import RedisStates
    from ..store.rollbacks import RollbackRecords

OK, FINDINGS, USAGE = 0, 1, 2
OPEN_WARNING = (
    "no --auth file: anyone who reaches the port may evaluate, roll back, restart and read every test;"
    " give one (README 'Who may do what') before the service is reachable from other hosts"
)
GRACE_SECONDS = 10.0
SIGNAL_POLL_SECONDS = 0.05  # how soon the main thread sees a signal the handler noted


# Evaluate is safe to retry (a resent snapshot is answered from the log), so the client retries
# UNAVAILABLE (rebuilding, the log cannot be written, shutting down) with gRPC's own retry policy.
RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "abguard.v1.RiskService", "method": "Evaluate"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
RETRY_OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", RETRY_SERVICE_CONFIG)]


def _workers(text: str) -> int:
    """positive_int, naming both sources: the value may come from ABGUARD_WORKERS."""
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (from --workers or ABGUARD_WORKERS)") from None


def add_parsers(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the gRPC service (settings also from ABGUARD_* variables)")
    serve.add_argument("--listen", default=env_default("LISTEN", "127.0.0.1:50051"), help="host:port (ABGUARD_LISTEN)")
    serve.add_argument(
        "--data-dir", default=env_default("DATA_DIR", None), help="decision log folder (ABGUARD_DATA_DIR)"
    )
    serve.add_argument(
        "--log", default=env_default("LOG", None), metavar="URL",
        help="keep the decision log in PostgreSQL (postgresql://...) so replicas share it;"
        " default: SQLite in --data-dir (ABGUARD_LOG)",
    )  # fmt: skip
    serve.add_argument(
        "--state", default=env_default("STATE", None), metavar="URL",
        help="share per-test state between replicas in Redis (redis://host:port/db[?prefix=P]);"
        " needs --log postgresql://... (ABGUARD_STATE)",
    )  # fmt: skip
    serve.add_argument(
        "--state-key-file", default=env_default("STATE_KEY_FILE", None), metavar="FILE",
        help="hex key (32 bytes or more) that seals the states kept in Redis and checkpoints; else $ABGUARD_STATE_KEY,"
        " else a key the decision log's database keeps (ABGUARD_STATE_KEY_FILE)",
    )  # fmt: skip
    serve.add_argument(
        "--policies", default=env_default("POLICIES", "policies"), help="policy folder (ABGUARD_POLICIES)"
    )
    serve.add_argument("--profile", default=env_default("PROFILE", DEFAULT_PROFILE), help="profile (ABGUARD_PROFILE)")
    serve.add_argument("--env", default=env_default("ENV", None), help="environment overlay (ABGUARD_ENV)")
    serve.add_argument(
        "--workers", type=_workers, default=env_default("WORKERS", "16"), help="RPC threads (ABGUARD_WORKERS)"
    )
    serve.add_argument(
        "--auth", default=env_default("AUTH", None), metavar="FILE",
        help="who may do what: tokens, JWT rules, mTLS clients, roles and limits (README 'Who may do what');"
        " without it anyone who reaches the port may do anything (ABGUARD_AUTH)",
    )  # fmt: skip
    serve.add_argument(
        "--flags", default=env_default("FLAGS", None), metavar="FILE",
        help="feature-flag provider config (YAML) that rollbacks flip (ABGUARD_FLAGS)",
    )  # fmt: skip
    serve.add_argument(
        "--alertmanager", default=env_default("ALERTMANAGER_URL", None), metavar="URL",
        help="Alertmanager base URL that alerts go to, e.g. http://127.0.0.1:9093 (ABGUARD_ALERTMANAGER_URL)",
    )  # fmt: skip
    serve.add_argument(
        "--http", default=env_default("HTTP", None), metavar="HOST:PORT",
        help="also serve HTTP/JSON, /metrics and the dashboard here, e.g. 127.0.0.1:8080 (ABGUARD_HTTP)",
    )  # fmt: skip
    serve.add_argument(
        "--trusted-proxies", default=env_default("TRUSTED_PROXIES", ""), metavar="ADDRS",
        help="comma-separated addresses or networks of the proxies in front of --http whose X-Forwarded-For"
        " names the caller (per-address limits count that address); from any other peer the header is"
        " ignored. Default none (ABGUARD_TRUSTED_PROXIES)",
    )  # fmt: skip
    serve.add_argument(
        "--pull", default=env_default("PULL", None), metavar="FILE",
        help="build the listed tests' snapshots from Prometheus every interval (ABGUARD_PULL)",
    )  # fmt: skip
    serve.add_argument(
        "--notify-webhook", default=env_default("NOTIFY_WEBHOOK", None), metavar="URL",
        help="URL rollback events are POSTed to, signed with $ABGUARD_NOTIFY_WEBHOOK_SECRET (ABGUARD_NOTIFY_WEBHOOK)",
    )  # fmt: skip
    serve.add_argument(
        "--processes", type=positive_int, default=env_default("PROCESSES", "1"),
        help="serving processes sharing the port (SO_REUSEPORT); more than 1 needs --log postgresql://..."
        " (ABGUARD_PROCESSES)",
    )  # fmt: skip
    serve.add_argument(
        "--tls-cert", default=env_default("TLS_CERT", None), metavar="FILE",
        help="serve gRPC and --http over TLS with this PEM certificate (chain), with --tls-key;"
        " reloaded when it changes (ABGUARD_TLS_CERT)",
    )  # fmt: skip
    serve.add_argument(
        "--tls-key", default=env_default("TLS_KEY", None), metavar="FILE",
        help="the certificate's PEM private key, unencrypted (ABGUARD_TLS_KEY)",
    )  # fmt: skip
    serve.add_argument(
        "--tls-client-ca", default=env_default("TLS_CLIENT_CA", None), metavar="FILE",
        help="mTLS: require client certificates issued by the CA(s) in this PEM file (ABGUARD_TLS_CLIENT_CA)",
    )  # fmt: skip
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set by --processes
    serve.add_argument("--no-outbox", action="store_true", help=argparse.SUPPRESS)  # all but the first process
    serve.set_defaults(run=run_serve)

    evaluate = commands.add_parser("evaluate", help="stream a JSON-lines file through a server's Evaluate")
    evaluate.add_argument("--server", default=env_default("SERVER", "127.0.0.1:50051"), metavar="ADDR")
    evaluate.add_argument("--input", required=True, metavar="FILE", help="JSON lines of snapshots, or -")
    evaluate.add_argument("--format", choices=("jsonl", "table"), default="jsonl")
    evaluate.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    add_connection_options(evaluate)
    evaluate.set_defaults(run=run_evaluate)

    health = commands.add_parser("health", help="exit 0 when the server answers SERVING")
    health.add_argument("--server", default=env_default("SERVER", "127.0.0.1:50051"), metavar="ADDR")
    health.add_argument("--timeout", type=float, default=3.0)
    add_connection_options(health)
    health.set_defaults(run=run_health)


def run_serve(args: argparse.Namespace) -> int:
    problem = _tls_problem(args)  # checked here too with --processes: children that cannot start would respawn
    if problem is not None:
        print(f"abguard serve: {problem}", file=sys.stderr)
        return USAGE
    try:
        tls = _server_tls(args)
    except ValueError as error:  # names the flag and the file
        print(f"abguard serve: {error}", file=sys.stderr)
        return USAGE
    return supervise(args) if int(args.processes) > 1 else _serve_one(args, tls)


def _tls_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the TLS flags as given together, if anything."""
    if bool(args.tls_cert) != bool(args.tls_key):
        return "--tls-cert and --tls-key go together (ABGUARD_TLS_CERT, ABGUARD_TLS_KEY): a certificate and its key"
    if args.tls_client_ca and not args.tls_cert:
        return "--tls-client-ca (ABGUARD_TLS_CLIENT_CA) needs --tls-cert and --tls-key: mTLS is TLS that checks clients"
    return None


def _server_tls(args: argparse.Namespace) -> ServerTls | None:
    """The TLS of both transports, its files checked now, or None without --tls-cert."""
    if not args.tls_cert:
        return None
    from ..security.tls import ServerTls  # noqa: PLC0415  # cryptography only with TLS

    client_ca = Path(args.tls_client_ca) if args.tls_client_ca else None
    return ServerTls(Path(args.tls_cert), Path(args.tls_key), client_ca, on_event=log_event)


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the serve command line before anything is opened, if anything."""
    if not args.data_dir:
        return "--data-dir (or ABGUARD_DATA_DIR) is required: the decision log lives there"
    if args.state and not (args.log or "").startswith(("postgresql://", "postgres://")):
        return "--state (ABGUARD_STATE) needs --log postgresql://...: replicas share both"
    return None


def _serve_one(args: argparse.Namespace, tls: ServerTls | None) -> int:
    problem = _usage_problem(args)
    if problem is not None:
        print(f"abguard serve: {problem}", file=sys.stderr)
        return USAGE
    policy = load_policy(args.policies, args.profile, args.env)
    if policy is None:
        return FINDINGS
    gate = _gate(args)
    if gate is None:
        return USAGE
    try:
        state_key = configured_key(args.state_key_file)  # StateKeyError is a ValueError naming the flag
        log = _open_log(args)
    except (LogOpenError, ValueError) as error:
        print(f"abguard serve: {error}", file=sys.stderr)
        return USAGE
    shared = _shared_states(args.state) if args.state else None
    try:
        rollbacks, pull = _integrations(args, policy)
    except (OSError, ValueError, LogOpenError) as error:  # PullConfigError is a ValueError
        print(f"abguard serve: {error}", file=sys.stderr)
        log.close()
        return USAGE
    # tests load on first use
    guard = Guard(policy, log, on_event=log_event, rollbacks=rollbacks, shared=shared, state_key=state_key)
    metrics = Metrics(guard)
    try:
        server, port, health, web = _listeners(args, guard, metrics, gate, tls)
    except _CannotListen as error:
        print(f"abguard serve: {error}", file=sys.stderr)
        guard.close()
        return USAGE
    stop = threading.Event()  # set by the rebuild when it cannot finish, or on a signal
    signals = _noted_signals()
    server.start()  # the port is open at once (health NOT_SERVING): a long rebuild is not a dead service
    if web is not None:
        web.start()
    _announce(args, policy, port, web, log.path, shared, gate, tls)
    failed: list[tuple[int, str]] = []  # the exit code and line of a start that could not finish
    rebuilder = threading.Thread(target=_warm, args=(guard, log.path, stop, failed), name="abguard-warm", daemon=True)
    rebuilder.start()
    if not args.no_outbox:  # (one process of serve --processes runs it: each item goes out once)
        rollbacks.start()  # the outbox runs from the start: work queued before a restart goes out now
    puller = _puller(guard, pull) if pull is not None else None
    if puller is not None:
        puller.start()  # its rounds wait while the guard is not serving
    reloader = _reloader(args, guard, rollbacks)
    reloader.start()
    _wait_for_stop(stop, signals, reloader, tls, gate)
    started = time.monotonic()
    reloader.stop()
    _shut_down(puller, health, guard, server, web, rollbacks, rebuilder)
    log_event({"event": "stopped", "drain_seconds": round(time.monotonic() - started, 3)})
    if failed:
        print(failed[0][1], file=sys.stderr)
        return failed[0][0]
    return OK


def _gate(args: argparse.Namespace) -> Gate | None:
    """Who may do what (--auth), or None after printing why the file cannot be used."""
    try:
        return Gate(load_auth(args.auth) if args.auth else no_auth(), log_event)
    except AuthFileError as error:
        print(f"abguard serve: --auth: {error}", file=sys.stderr)
        return None


class _CannotListen(Exception):
    """A port that cannot be bound: the message names the flag and the address."""


def _listeners(
    args: argparse.Namespace, guard: Guard, metrics: Metrics, gate: Gate, tls: ServerTls | None
) -> tuple[grpc.Server, int, Any, HttpServer | None]:
    """The gRPC server and the HTTP one (--http), bound, not started, both behind the gate and TLS."""
    try:
        server, port, health = create_server(
            guard, args.listen, args.workers, log_event, metrics, args.reuse_port, gate, tls
        )
    except (OSError, RuntimeError) as error:
        raise _CannotListen(f"cannot listen on {args.listen}: {error}") from None
    try:
        return server, port, health, _http_server(args, guard, metrics, gate, tls)
    except OSError as error:
        server.stop(None)
        raise _CannotListen(f"cannot listen on {args.http} (--http): {error}") from None
    except ValueError as error:  # names the flag: --trusted-proxies
        server.stop(None)
        raise _CannotListen(str(error)) from None


def _shut_down(
    puller: Puller | None, health: Any, guard: Guard, server: grpc.Server, web: HttpServer | None,
    rollbacks: Rollbacks, rebuilder: threading.Thread,
) -> None:  # fmt: skip
    """Stop taking work, let in-flight calls finish, then close what holds files, in that order."""
    if puller is not None:
        puller.stop()
    health.enter_graceful_shutdown()
    guard.end_watches()  # watch streams end cleanly instead of holding the drain open
    server.stop(GRACE_SECONDS).wait()  # refuse new calls, let in-flight ones finish
    if web is not None:
        web.stop(GRACE_SECONDS)
    rollbacks.stop()
    guard.close()  # stops a rebuild still running; a failed checkpoint is logged, not raised
    rebuilder.join(GRACE_SECONDS)  # before the rollback store closes: the rebuild ends by reconciling it
    rollbacks.store.close()


def _integrations(args: argparse.Namespace, policy: Policy) -> tuple[Rollbacks, PullConfig | None]:
    """The rollback process's sinks and the pull source, as configured; OSError or ValueError naming what is wrong."""
    rollbacks = build_rollbacks(
        Path(args.data_dir), args.flags, args.alertmanager, policy, log_event,
        notify_url=args.notify_webhook, notify_secret=os.environ.get(NOTIFY_SECRET_ENV), store=_shared_records(args),
    )  # fmt: skip
    from ..pull import PullConfigError, load_pull_config  # noqa: PLC0415  # only with --pull

    try:
        return rollbacks, load_pull_config(args.pull) if args.pull else None
    except PullConfigError:
        rollbacks.store.close()
        raise


def _http_server(
    args: argparse.Namespace, guard: Guard, metrics: Metrics, gate: Gate, tls: ServerTls | None
) -> HttpServer | None:
    """The HTTP/JSON server on --http (bound, not started), or None without it."""
    if not args.http:
        return None
    from ..http import HttpServer, create_app  # noqa: PLC0415  # starlette and uvicorn only with --http
    from ..http.access import no_peer  # noqa: PLC0415

    peer_of = no_peer
    if tls is not None:
        from ..security.tls import http_peer  # noqa: PLC0415  # cryptography only with TLS

        peer_of = http_peer
    app = create_app(guard, metrics, log_event, max(1, args.workers // 4), gate, peer_of)
    return HttpServer(app, args.http, tls, args.trusted_proxies.split(","))


def _shared_records(args: argparse.Namespace) -> RollbackRecords | None:
    """With a shared log, the rollback records and the outbox sit beside it, seen by every replica."""
    if not args.log:
        return None
    from ..store.postgres_rollbacks import PostgresRollbackStore  # noqa: PLC0415  # psycopg only with --log

    return PostgresRollbackStore(args.log)


def _shared_states(url: str) -> RedisStates:
    from ..store.redis_state import RedisStates  # noqa: PLC0415  # redis only with --state

    return RedisStates(url)


def _puller(guard: Guard, pull: PullConfig) -> Puller:
    from ..pull import Puller  # noqa: PLC0415  # only with --pull

    return Puller(guard, pull, log_event)


def _noted_signals() -> list[int]:
    """SIGTERM and SIGINT, noted in the list returned.

    The handler only appends: it runs in the main thread between two bytecodes, maybe while that
    thread holds the event's or the log's lock, and taking either there would deadlock (seen under
    load: SIGTERM right after the `serving` line hung the process)."""
    signals: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        signals.append(number)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)  # reload the policies (_wait_for_stop tells them apart)
    return signals


def _announce(
    args: argparse.Namespace, policy: Policy, port: int, web: HttpServer | None, log: str, shared: RedisStates | None,
    gate: Gate, tls: ServerTls | None,
) -> None:  # fmt: skip
    """The first line: where the service listens, what it decides with, and who may call."""
    host = args.listen.rsplit(":", 1)[0]
    log_event(
        {
            "event": "serving",
            "listen": f"{host}:{port}",
            "http": web.address if web is not None else None,
            "tls": None if tls is None else "mtls" if tls.mutual else "tls",  # on gRPC and HTTP alike
            "policy": {"name": policy.name, "version": policy.version, "digest": policy.digest},
            "profile": policy.profile,
            "environment": policy.environment,
            "enforced": policy.rollback_enabled,
            "data_dir": args.data_dir,
            "log": log,
            "state": shared.where if shared is not None else None,
            "compiled": is_compiled(),  # the core built by mypyc (setup.py), or interpreted
            "auth": {"file": gate.config.source, **gate.config.summary, "open": sorted(gate.config.open)}
            if gate.enforcing
            else None,
            **({} if gate.enforcing else {"warning": OPEN_WARNING}),
        }
    )


def _reloader(args: argparse.Namespace, guard: Guard, rollbacks: Rollbacks) -> Reloader:
    """Reloads the policies folder on SIGHUP or when it changes; a refused policy is logged and alerted."""

    def alert(rejected: Rejected) -> None:
        if rollbacks.alerts is None:
            return
        body = Alert(
            alertname="AbguardPolicyRejected", severity=Severity.WARNING, test_id="", condition="policy",
            summary="a policy reload was refused: the last good policy stays in force", decision_id="",
            description=f"{rejected.source}: {rejected.why}"[:2000], starts_at=rejected.at,
            environment=guard.policy.environment,
        )  # fmt: skip
        try:
            rollbacks.alerts.send([body.to_json()])
        except Exception as error:  # the refusal is logged and in GetPolicy all the same
            log_event({"event": "alert_failed", "alertname": "AbguardPolicyRejected", "why": str(error)[:300]})

    profile = None if args.profile in (None, "none") else args.profile
    reloader = Reloader(args.policies, profile, args.env, guard.policy, guard.swap_policy, log_event, alert)
    guard.reloader = reloader
    return reloader


def _wait_for_stop(
    stop: threading.Event, signals: list[int], reloader: Reloader, tls: ServerTls | None, gate: Gate
) -> None:
    while not stop.wait(SIGNAL_POLL_SECONDS):
        if tls is not None:  # a replaced certificate is loaded (and logged) within a second, traffic or not
            tls.current()
        gate.refresh()  # so is a changed auth file
        while signal.SIGHUP in signals:  # a reload, not a stop
            signals.remove(signal.SIGHUP)
            reloader.request("SIGHUP")
        if signals:
            break
    if signals:
        log_event({"event": "stopping", "signal": signal.Signals(signals[0]).name})
        stop.set()  # the rebuild sees it and stops


def _open_log(args: argparse.Namespace) -> SqliteLog | PostgresLog:
    """The decision log --log names (PostgreSQL), or SQLite in --data-dir."""
    url = args.log
    if not url:
        return SqliteLog.in_dir(args.data_dir)
    if url.startswith(("postgresql://", "postgres://")):
        from ..store.postgres import PostgresLog  # noqa: PLC0415  # psycopg only with --log

        return PostgresLog(url)
    raise ValueError(f"--log (ABGUARD_LOG) must be a postgresql:// URL, got {url.split('://')[0]!r}://...")


def _warm(guard: Guard, path: str, stop: threading.Event, failed: list[tuple[int, str]]) -> None:
    """Reopen missing rollback records and check the log can be written; stop the service if the log cannot be read."""
    started = time.monotonic()
    try:
        reopened = guard.warm()
        if stop.is_set():
            return
        guard.check_log()  # a log that cannot be written: NOT_SERVING from the start, probed until it can
    except LogError as error:
        if not stop.is_set():  # (not a read cut short by a shutdown)
            fix = "move it aside to start a new log, or restore it"
            failed.append((USAGE, f"abguard serve: cannot read the decision log {path}: {error}: {fix}"))
            log_event({"event": "start_failed", "why": str(error)})
            stop.set()
        return
    except Exception as error:  # a bug of ours: say so in one line, stop
        failed.append((FINDINGS, f"abguard serve: starting failed: {type(error).__name__}: {error}"))
        log_event({"event": "internal_error", "method": "warm", "error": repr(error)[:1000]})
        stop.set()
        return
    if not stop.is_set():
        log_event({"event": "ready", "rollbacks_reopened": reopened, "seconds": round(time.monotonic() - started, 3)})


def run_evaluate(args: argparse.Namespace) -> int:
    try:
        source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        print(f"abguard evaluate: cannot read {args.input}: {error.strerror}", file=sys.stderr)
        return USAGE
    bad = 0
    with source, open_channel(args, options=RETRY_OPTIONS) as channel:
        stub = rpc.RiskServiceStub(channel)
        if args.format == "table":
            print(table_header())
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            problem = _contract_problem(line)  # protobuf's JSON reading would turn "50" or true into numbers
            if problem is not None:
                bad += 1
                print(f"line {number}: {problem}", file=sys.stderr)
                continue
            try:
                snapshot = json_format.Parse(line, pb.Snapshot())
                response = _evaluate_paced(stub, pb.EvaluateRequest(snapshot=snapshot), args.timeout)
            except json_format.ParseError as error:
                bad += 1
                print(f"line {number}: {error}", file=sys.stderr)
                continue
            except grpc.RpcError as error:
                if error.code() in _FATAL:  # the server, the connection or our credentials: no line will pass
                    print(f"abguard evaluate: {args.server}: {failure(args, error)}", file=sys.stderr)
                    return FINDINGS
                bad += 1
                print(f"line {number}: {error.code().name}: {error.details()}", file=sys.stderr)
                continue
            decision = to_dict(response.decision)
            print(to_json_dict(decision) if args.format == "jsonl" else table_row(decision), flush=True)
    if bad:
        print(f"{bad} line{'s' if bad != 1 else ''} rejected", file=sys.stderr)
    return FINDINGS if bad else OK


# codes that say nothing about the line: every later one would get the same, so the run stops
_FATAL = (
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED,
)  # fmt: skip
PACED_ATTEMPTS = 20  # waits a rate-limited line may take, each as long as the server asked


def _evaluate_paced(stub: Any, request: pb.EvaluateRequest, timeout: float) -> pb.EvaluateResponse:
    """Evaluate, waiting as long as the server's RetryInfo asks when the caller's rate is spent (a
    resent snapshot is answered from the log, so trying again is safe)."""
    for _ in range(PACED_ATTEMPTS):
        try:
            return cast(pb.EvaluateResponse, stub.Evaluate(request, timeout=timeout))  # the stub is untyped
        except grpc.RpcError as error:
            wait = _retry_delay(error) if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else None
            if wait is None:
                raise
            time.sleep(min(wait, timeout))
    return cast(pb.EvaluateResponse, stub.Evaluate(request, timeout=timeout))


def _retry_delay(error: grpc.RpcError) -> float | None:
    """Seconds the server's google.rpc.RetryInfo asks to wait, or None when it gave none."""
    from google.rpc import error_details_pb2  # noqa: PLC0415
    from grpc_status import rpc_status  # noqa: PLC0415

    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    return None


def _contract_problem(line: str) -> str | None:
    """What the snapshot contract says is wrong with a line, in its own field names, before protobuf reads it."""
    try:
        parse_snapshot(json.loads(line))
    except json.JSONDecodeError as bad_json:
        return f"$: invalid JSON: {bad_json.msg} at column {bad_json.colno}"
    except InputError as bad_field:
        return str(bad_field)
    return None


def run_health(args: argparse.Namespace) -> int:
    try:
        with open_channel(args) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
    except grpc.RpcError as error:
        print(f"{args.server}: {failure(args, error)}", file=sys.stderr)
        return FINDINGS
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.server}: {status}")
    return OK if reply.status == health_pb2.HealthCheckResponse.SERVING else FINDINGS
