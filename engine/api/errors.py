"""Domain errors as status codes, for every transport: gRPC sends the code, HTTP its status."""

from __future__ import annotations

import sqlite3

from google.rpc import code_pb2

from ..contract import InputError, OutOfOrderError
from ..rollback.process import RollbackError
from ..security.limits import LimitError
from ..service import RebuildingError, RollbacksUnavailableError, UnknownRollbackError, UnknownTestError
from ..store import LogError


class DeadlinePassedError(RuntimeError):
    """The caller's deadline passed before the work began: nothing is done, DEADLINE_EXCEEDED."""


class ReloadUnavailableError(RuntimeError):
    """ReloadPolicy on a server that keeps no reloader (tests, embedded use): FAILED_PRECONDITION."""


class TooManyWatchersError(RuntimeError):
    """Each watch stream holds a worker thread (or an HTTP connection); past the limit Evaluate would starve."""


def status_of(error: Exception) -> tuple[int, str, list[tuple[str, str]]] | None:
    """The status code, message and field violations a domain error maps to; None for a bug of ours."""
    if isinstance(error, InputError):
        return code_pb2.INVALID_ARGUMENT, str(error), [(v.field, v.message) for v in error.violations]
    if isinstance(error, OutOfOrderError):
        return code_pb2.FAILED_PRECONDITION, str(error), [("snapshot.timestamp", str(error))]
    if isinstance(error, UnknownTestError):
        return code_pb2.NOT_FOUND, str(error), [("test_id", str(error))]
    if isinstance(error, UnknownRollbackError):
        return code_pb2.NOT_FOUND, str(error), [("rollback_id", str(error))]
    if isinstance(error, RollbackError):  # a report that does not fit: unknown step or outcome
        field = "outcome" if "outcome" in str(error) else "step"
        return code_pb2.INVALID_ARGUMENT, str(error), [(field, str(error))]
    if isinstance(error, RollbacksUnavailableError):
        return code_pb2.FAILED_PRECONDITION, str(error), []
    if isinstance(error, (TooManyWatchersError, LimitError)):
        return code_pb2.RESOURCE_EXHAUSTED, str(error), []
    if isinstance(error, DeadlinePassedError):
        return code_pb2.DEADLINE_EXCEEDED, str(error), []
    if isinstance(error, ReloadUnavailableError):
        return code_pb2.FAILED_PRECONDITION, str(error), []
    if isinstance(error, sqlite3.Error):  # the rollback records cannot be read or written now: retryable
        return code_pb2.UNAVAILABLE, f"the rollback records cannot be used: {error}", []
    if isinstance(error, (LogError, RebuildingError)):  # retryable; health says NOT_SERVING meanwhile
        return code_pb2.UNAVAILABLE, str(error), []
    return None
