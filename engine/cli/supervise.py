"""`abguard serve --processes N`: N serving processes on one port, started by spawn, kept running.

One Python process decides on one core (the GIL); N processes share the port through
SO_REUSEPORT, and the kernel spreads connections over them. They must share the log and the
state, so N > 1 needs --log postgresql://... (and --state redis://... saves them replaying a
test's log when its calls move between processes). Only the first process runs the HTTP
server, the pull loop and the rollback outbox, so each alert and flag change goes out once.
A process that dies is started again; SIGTERM or SIGINT stops them all, each draining its calls.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess

from .logging import log_event

OK, USAGE = 0, 2
RESTART_PAUSE = 1.0  # seconds before a process that died is started again
POLL = 0.1
STOP_SECONDS = 30.0


def supervise(args: argparse.Namespace) -> int:
    if not (args.log or "").startswith(("postgresql://", "postgres://")):
        print(
            "abguard serve: --processes above 1 needs --log postgresql://...: the processes share the decision log"
            " (SQLite has one writer)",
            file=sys.stderr,
        )
        return USAGE
    host, _, port_text = args.listen.rpartition(":")
    try:
        reserved, port = _reserve(host or "127.0.0.1", int(port_text))
    except (OSError, ValueError) as error:
        print(f"abguard serve: cannot listen on {args.listen}: {error}", file=sys.stderr)
        return USAGE
    listen = f"{host}:{port}"
    context = multiprocessing.get_context("spawn")
    children = [_start(context, _argv(args, listen, index)) for index in range(args.processes)]
    log_event(
        {"event": "supervising", "processes": args.processes, "listen": listen, "pids": [c.pid for c in children]}
    )
    stopping: list[int] = []
    reloads: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, _frame: stopping.append(number))
    signal.signal(signal.SIGINT, lambda number, _frame: stopping.append(number))
    signal.signal(signal.SIGHUP, lambda number, _frame: reloads.append(number))
    try:
        while not stopping:
            time.sleep(POLL)
            while reloads:  # each process reloads (and checks) the policies itself
                reloads.pop()
                for child in children:
                    if child.is_alive() and child.pid is not None:
                        os.kill(child.pid, signal.SIGHUP)
            for index, child in enumerate(children):
                if child.is_alive() or stopping:
                    continue
                log_event({"event": "process_exited", "index": index, "exitcode": child.exitcode, "restarting": True})
                time.sleep(RESTART_PAUSE)
                children[index] = _start(context, _argv(args, listen, index))
    finally:
        codes = _stop(children)
        reserved.close()
    log_event({"event": "stopped", "processes": args.processes, "exit_codes": codes})
    return OK if all(code == 0 for code in codes) else max(code or 1 for code in codes)


def _reserve(host: str, port: int) -> tuple[socket.socket, int]:
    """A bound SO_REUSEPORT socket on the port (a free one for 0), held so the port stays ours."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    return sock, int(sock.getsockname()[1])


def _argv(args: argparse.Namespace, listen: str, index: int) -> list[str]:
    """The serve command line of process `index`: one process, the shared port, the first one's extras."""
    argv = ["serve", "--listen", listen, "--processes", "1", "--reuse-port", "--workers", str(args.workers)]
    for flag, value in (
        ("--data-dir", args.data_dir), ("--log", args.log), ("--state", args.state),
        ("--policies", args.policies), ("--profile", args.profile), ("--env", args.env), ("--auth", args.auth),
        ("--flags", args.flags), ("--alertmanager", args.alertmanager), ("--notify-webhook", args.notify_webhook),
        ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key), ("--tls-client-ca", args.tls_client_ca),
        ("--state-key-file", args.state_key_file),
    ):  # fmt: skip
        if value:
            argv += [flag, str(value)]
    if index > 0:
        return [*argv, "--no-outbox"]
    for flag, value in (("--http", args.http), ("--pull", args.pull)):
        if value:
            argv += [flag, str(value)]
    return argv


def _start(context: multiprocessing.context.SpawnContext, argv: list[str]) -> BaseProcess:
    process = context.Process(target=_child, args=(argv,), name="abguard-serve", daemon=False)
    process.start()
    return process


def _child(argv: list[str]) -> None:
    from . import main  # noqa: PLC0415  # engine.cli imports this module: import it in the child only

    sys.exit(main(argv))


def _stop(children: list[BaseProcess]) -> list[int | None]:
    for child in children:
        if child.is_alive() and child.pid is not None:
            child.terminate()  # SIGTERM: each drains its calls
    deadline = time.monotonic() + STOP_SECONDS
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(5)
    return [child.exitcode for child in children]
