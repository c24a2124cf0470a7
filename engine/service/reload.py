"""Safe policy reload: on SIGHUP or a change in the policies folder, try the new policy in a child
process first, then swap it in between two evaluations; a bad one leaves the last good in force.

The child (spawned: a fresh interpreter, so a ruleset that hangs or crashes durable_rules takes
only it down) validates the folder, compiles and registers the effective policy for this
service's profile and environment, and runs the policy's own test cases (`tests/` in the
folder). It must answer within `timeout` seconds. Only then does this process load the same
files and swap. What was rejected, and why, stays visible (GetPolicy, /v1/policy) and is
logged and alerted; it is tried again only when the folder changes again or on the next SIGHUP.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract.times import format_time
from ..policy.model import Policy
from ..policy.policyset import PolicyError, load_effective

WATCH_SECONDS = 2.0  # how often the folder is looked at for changes
TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Rejected:
    at: str
    why: str
    digest: str  # the effective policy's digest when it could be built, else the files' (sha256:...)
    source: str  # what asked: SIGHUP, folder_changed


@dataclass(frozen=True)
class PolicyStatus:
    active: Policy
    loaded_at: str
    rejected: Rejected | None


class Reloader:
    """Watches `folder` (and takes SIGHUP requests); swaps good policies into `swap`."""

    def __init__(
        self,
        folder: str,
        profile: str | None,
        environment: str | None,
        current: Policy,
        swap: Callable[[Policy], None],
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_rejected: Callable[[Rejected], None] | None = None,
        timeout: float = TIMEOUT_SECONDS,
        watch_seconds: float = WATCH_SECONDS,
    ) -> None:
        self.folder, self.profile, self.environment = folder, profile, environment
        self._swap, self._on_event, self._on_rejected = swap, on_event, on_rejected
        self.timeout, self.watch_seconds = timeout, watch_seconds
        self._status = PolicyStatus(current, format_time(time.time()), None)
        self._fingerprint = fingerprint(folder)
        self._lock = threading.Lock()  # one reload at a time
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._asked: list[str] = []
        self._thread: threading.Thread | None = None

    @property
    def status(self) -> PolicyStatus:
        return self._status

    def request(self, source: str) -> None:
        """Ask for a reload (from a signal handler's loop: only notes it, the watcher thread does it)."""
        self._asked.append(source)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="abguard-policy-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.watch_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            asked = self._asked[:]
            del self._asked[: len(asked)]
            now = fingerprint(self.folder)
            if asked:
                self.reload(asked[0])
            elif now != self._fingerprint:
                self.reload("folder_changed")

    def reload(self, source: str) -> bool:
        """Try the folder's policy now; whether it is in force afterwards."""
        with self._lock:
            self._fingerprint = fingerprint(self.folder)  # a rejected version is not retried until it changes
            started = time.monotonic()
            problem = smoke_test(self.folder, self.profile, self.environment, self.timeout)
            policy: Policy | None = None
            if problem is None:
                try:
                    policy = load_effective([self.folder], self.profile, self.environment)
                except PolicyError as error:  # the folder changed between the child's look and ours
                    problem = "; ".join(d.text() for d in error.diagnostics[:5])
            if policy is None:
                rejected = Rejected(format_time(time.time()), problem or "unknown", self._digest(), source)
                self._status = PolicyStatus(self._status.active, self._status.loaded_at, rejected)
                self._event({"event": "policy_rejected", "source": source, "digest": rejected.digest, "why": problem})
                if self._on_rejected is not None:
                    self._on_rejected(rejected)
                return False
            if policy.digest == self._status.active.digest:
                self._status = PolicyStatus(self._status.active, self._status.loaded_at, None)
                self._event({"event": "policy_unchanged", "source": source, "digest": policy.digest})
                return True
            self._swap(policy)
            self._status = PolicyStatus(policy, format_time(time.time()), None)
            self._event(
                {
                    "event": "policy_reloaded", "source": source, "digest": policy.digest,
                    "name": policy.name, "version": policy.version,
                    "seconds": round(time.monotonic() - started, 3),
                }
            )  # fmt: skip
            return True

    def _digest(self) -> str:
        try:
            return load_effective([self.folder], self.profile, self.environment).digest
        except Exception:  # not a policy at all: the files' own digest says which bytes were refused
            return files_digest(self.folder)

    def _event(self, event: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(event)


def fingerprint(folder: str) -> tuple[tuple[str, int, int], ...]:
    """Every file under the folder with its mtime and size: cheap to take every few seconds."""
    out = []
    for path in sorted(Path(folder).rglob("*")):
        try:
            if path.is_file():
                stat = path.stat()
                out.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            continue
    return tuple(out)


def files_digest(folder: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*.y*ml")):
        try:
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            continue
    return f"sha256:{digest.hexdigest()}"


def smoke_test(folder: str, profile: str | None, environment: str | None, timeout: float) -> str | None:
    """None when the folder's policy validates, compiles, registers and passes its own tests in a
    spawned child within `timeout` seconds; else why not, in one line."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(folder, profile, environment, send), name="abguard-policy-check")
    child.start()
    send.close()
    try:
        if not receive.poll(timeout):
            return f"the policy check did not finish within {timeout:g} s (a ruleset durable_rules cannot compile?)"
        answer = receive.recv()
    except (EOFError, OSError):
        return f"the policy check died (exit code {child.exitcode}): durable_rules or the interpreter crashed on it"
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receive.close()
    return None if answer == "" else str(answer)


def _child(folder: str, profile: str | None, environment: str | None, send: Any) -> None:
    """In the spawned interpreter: "" when everything passes, else the first problems."""
    from .. import policytest  # noqa: PLC0415  # (the child's own imports; the parent has them already)
    from ..rules.registry import register  # noqa: PLC0415

    try:
        policy = load_effective([folder], profile, environment)
        register(policy)
        problems: list[str] = []
        tests = Path(folder) / "tests"
        if tests.is_dir():
            for file in policytest.discover([str(tests)]):
                for result in policytest.run_file(file, folder):
                    problems += [f"{result.name}: {failure}" for failure in result.failures]
        send.send("; ".join(f"policy test failed: {p}" for p in problems[:5]))
    except PolicyError as error:
        send.send("; ".join(d.text() for d in error.diagnostics[:5]))
    except Exception as error:
        send.send(f"{type(error).__name__}: {str(error)[:500]}")
    finally:
        send.close()
