"""The four roles and what each may do, for every gRPC method and HTTP route: one table, both transports.

A permission is a kind of work; a role is a set of permissions; an identity holds roles. The table
is the contract operators read in the README ("Who may do what"), so it lives here as data.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    EVALUATE = "evaluate"  # decide on snapshots: the gateway's job
    REPORT = "report"  # report rollback steps done by the gateway
    OPERATE = "operate"  # undo or force the guard: restart, manual rollback, policy reload
    READ = "read"  # tests, decisions, rollbacks, the policy, the dashboard and its live stream
    AUDIT = "audit"  # the audit trail: each stored record with its snapshot and its place in the hash chain
    METRICS = "metrics"  # /metrics, when the auth file does not leave it open


ROLES: dict[str, frozenset[Permission]] = {
    "gateway": frozenset({Permission.EVALUATE, Permission.REPORT, Permission.READ}),
    "operator": frozenset({Permission.OPERATE, Permission.READ, Permission.METRICS}),
    "auditor": frozenset({Permission.READ, Permission.AUDIT, Permission.METRICS}),
    "viewer": frozenset({Permission.READ, Permission.METRICS}),
}

# RiskService method -> the permission it needs. A method missing here is refused (tests check
# that every method of the service is listed).
GRPC_METHODS: dict[str, Permission] = {
    "Evaluate": Permission.EVALUATE,
    "EvaluateBatch": Permission.EVALUATE,
    "EvaluateStream": Permission.EVALUATE,
    "ReportRollbackStep": Permission.REPORT,
    "RestartTest": Permission.OPERATE,
    "RollbackTest": Permission.OPERATE,
    "ReloadPolicy": Permission.OPERATE,
    "GetPolicy": Permission.READ,
    "GetTest": Permission.READ,
    "GetRollback": Permission.READ,
    "ListRollbacks": Permission.READ,
    "ListDecisions": Permission.READ,
    "WatchDecisions": Permission.READ,
}

OPEN = "open"  # an HTTP route anyone may call: health, the API document, the dashboard's static files


def holders(permission: Permission) -> list[str]:
    """The roles that grant `permission`, for error messages: "needs the operator role"."""
    return [role for role, granted in ROLES.items() if permission in granted]


def needs(permission: Permission) -> str:
    names = holders(permission)
    return f"the {names[0]} role" if len(names) == 1 else "one of the roles " + ", ".join(names)
