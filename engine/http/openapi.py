"""The OpenAPI 3.1 document of the HTTP API (GET /openapi.json); tests check it is valid and that
every route the app serves is in it, and the other way round."""

from __future__ import annotations

from functools import cache
from typing import Any

from ..contract import Action, RiskLevel
from .access import IDENTIFIED, OPEN
from .routes import ROUTES

VERSION = "1.0.0"
_ACTIONS = [a.value for a in Action]
_LEVELS = [level.value for level in RiskLevel]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PROBLEM = {"description": "a problem (RFC 9457)", "content": {"application/problem+json": {"schema": _ref("Problem")}}}
_TEST_ID = {
    "name": "test_id", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "the test; may hold '/' (a Flagger canary's namespace/name)",
}  # fmt: skip
_PAGE = [
    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 500, "default": 50}},
    {"name": "page_token", "in": "query", "schema": {"type": "string"}, "description": "next_page_token of a page"},
]


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _PROBLEM for status in statuses}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _access_errors(paths: dict[str, Any]) -> None:
    """What the gate in front of a route may answer, added to its documented responses: 401 and
    429 on every guarded route, 403 where a permission is needed (ROUTES says which; /healthz,
    /readyz and /metrics need one unless the auth file opens them)."""
    for path, _handler, method, need in ROUTES:
        operation = paths.get(path.replace(":path", ""), {}).get(method.lower())
        if operation is None or need == OPEN:
            continue
        statuses = (401, 429) if need == IDENTIFIED else (401, 403, 429)  # health and metrics need READ, METRICS
        operation["responses"].update({str(s): _PROBLEM for s in statuses if str(s) not in operation["responses"]})


@cache
def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/evaluate": {"post": {
            "summary": "Evaluate one metric snapshot (a resent one is answered from the log)",
            "operationId": "evaluate", "requestBody": _body(_ref("Snapshot")),
            "responses": {"200": _json(_ref("Decision"), "the decision"), **_errors(400, 409, 413, 503, 500)},
        }},
        "/v1/tests": {"get": {
            "summary": "Every test with its status", "operationId": "listTests",
            "responses": {"200": _json({"type": "object", "properties": {
                "tests": {"type": "array", "items": _ref("Test")}, "policy": _ref("PolicyRef")}}, "the tests"),
                **_errors(503)},
        }},
        "/v1/policy": {"get": {
            "summary": "The policy deciding now, and the last one a reload refused (GetPolicy)",
            "operationId": "getPolicy",
            "responses": {"200": _json({"type": "object", "required": ["policy", "loaded_at", "rejected"], "properties": {
                "policy": _ref("PolicyRef"), "profile": {"type": "string"}, "environment": {"type": "string"},
                "loaded_at": {"type": "string", "format": "date-time"},
                "rejected": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {
                    "digest": {"type": "string"}, "why": {"type": "string"},
                    "rejected_at": {"type": "string", "format": "date-time"}, "source": {"type": "string"}}}]},
            }}, "the policy in force"), **_errors(500)},
        }},
        "/v1/tests/{test_id}": {"get": {
            "summary": "A test's status, target traffic and last decision", "operationId": "getTest",
            "parameters": [_TEST_ID], "responses": {"200": _json(_ref("Test"), "the test"), **_errors(404, 503)},
        }},
        "/v1/tests/{test_id}/decisions": {"get": {
            "summary": "A test's decisions, newest first", "operationId": "listDecisions",
            "parameters": [_TEST_ID, *_PAGE],
            "responses": {"200": _json({"type": "object", "required": ["decisions"], "properties": {
                "decisions": {"type": "array", "items": _ref("Decision")},
                "next_page_token": {"type": "string"}}}, "a page of decisions"), **_errors(400, 404, 503)},
        }},
        "/v1/tests/{test_id}/rollbacks": {"get": {
            "summary": "A test's rollbacks with their phases, steps and recovery", "operationId": "listRollbacks",
            "parameters": [_TEST_ID, _PAGE[0]],
            "responses": {"200": _json({"type": "object", "properties": {
                "rollbacks": {"type": "array", "items": _ref("Rollback")}}}, "the rollbacks"), **_errors(400, 409, 503)},
        }},
        "/v1/tests/{test_id}/rollbacks/{rollback_id}/steps": {"post": {
            "summary": "The gateway acknowledges a step only it can do (idempotent)", "operationId": "reportRollbackStep",
            "parameters": [_TEST_ID, {"name": "rollback_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": _body({"type": "object", "required": ["step", "outcome"], "properties": {
                "step": {"type": "string"}, "outcome": {"enum": ["done", "failed", "skipped"]},
                "detail": {"type": "string"}}}),
            "responses": {"200": _json(_ref("Rollback"), "the rollback"), **_errors(400, 404, 409, 503)},
        }},
        "/v1/tests/{test_id}/rollback": {"post": {
            "summary": "Roll a test back by hand (recorded with who asked)", "operationId": "rollbackTest",
            "parameters": [_TEST_ID],
            "requestBody": _body({"type": "object", "required": ["reason", "requested_by"], "properties": {
                "reason": {"type": "string"}, "requested_by": {"type": "string"}}}),
            "responses": {"200": _json(_ref("Rollback"), "the rollback"), **_errors(400, 404, 409, 503)},
        }},
        "/v1/tests/{test_id}/restart": {"post": {
            "summary": "Clear a test so it runs again (the reason is recorded)", "operationId": "restartTest",
            "parameters": [_TEST_ID],
            "requestBody": _body({"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}}),
            "responses": {"200": _json({"type": "object"}, "restarted"), **_errors(400, 404, 503)},
        }},
        "/v1/tests/{test_id}/verdict": {"get": {
            "summary": "Argo Rollouts Web metric: always 200; action null before any decision",
            "operationId": "verdict", "parameters": [_TEST_ID],
            "responses": {"200": _json(_ref("Verdict"), "the verdict"), **_errors(503)},
        }},
        "/v1/tests/{test_id}/dashboard": {"get": {
            "summary": "The spec's risk_dashboard document, with the series the page draws",
            "operationId": "dashboard", "parameters": [_TEST_ID],
            "responses": {"200": _json({"type": "object", "required": ["risk_dashboard"]}, "the dashboard"),
                          **_errors(404, 503)},
        }},
        "/v1/flagger/{hook}": {"post": {
            "summary": "Flagger webhooks: 200 is yes, 409 is no; on rollback, 200 means roll back now",
            "operationId": "flagger",
            "parameters": [{"name": "hook", "in": "path", "required": True, "schema": {"enum": [
                "confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback", "event"]}}],
            "requestBody": _body(_ref("FlaggerPayload")),
            "responses": {"200": _json(_ref("FlaggerAnswer"), "yes"), "409": _json(_ref("FlaggerAnswer"), "no"),
                          **_errors(400, 503)},
        }},
        "/v1/watch": {"get": {
            "summary": "Server-Sent Events (event: decision) of new decisions", "operationId": "watch",
            "parameters": [
                {"name": "test_id", "in": "query", "schema": {"type": "array", "items": {"type": "string"}},
                 "explode": True, "description": "only these tests (all when absent)"},
                {"name": "action", "in": "query", "schema": {"type": "array", "items": {"enum": _ACTIONS}},
                 "explode": True, "description": "only these actions (all when absent)"},
            ],
            "responses": {"200": {"description": "the stream", "content": {"text/event-stream": {
                "schema": {"type": "string"}}}}, **_errors(400, 429, 503)},
        }},
        "/v1/whoami": {"get": {
            "summary": "The caller's identity, roles and permissions", "operationId": "whoami",
            "responses": {"200": _json(_ref("Identity"), "who is calling"), **_errors(401, 429)},
        }},
        "/v1/session": {
            "post": {"summary": "The dashboard's sign-in: the bearer token becomes an HttpOnly cookie",
                     "operationId": "openSession",
                     "responses": {"200": _json(_ref("Identity"), "signed in"), **_errors(400, 401, 429)}},
            "delete": {"summary": "Sign out: the cookie is cleared", "operationId": "closeSession",
                       "security": [], "responses": {"204": {"description": "signed out"}}},
        },
        "/v1/policy/reload": {"post": {
            "summary": "Reload the policies folder now, as SIGHUP does (operator); answers GET /v1/policy after it",
            "operationId": "reloadPolicy",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"reason": {"type": "string"}}}}}},
            "responses": {"200": _json({"type": "object"}, "the policy in force after the reload"),
                          **_errors(401, 403, 409, 429)},
        }},
        "/v1/tests/{test_id}/audit": {"get": {
            "summary": "A test's audit trail (auditor): stored records with snapshots and hash chain, newest first",
            "operationId": "auditTrail", "parameters": [_TEST_ID, *_PAGE],
            "responses": {"200": _json({"type": "object", "required": ["records"], "properties": {
                "records": {"type": "array", "items": _ref("AuditRecord")},
                "next_page_token": {"type": "string"}}}, "a page of records"), **_errors(400, 401, 403, 404, 503)},
        }},
        "/healthz": {"get": {"summary": "Liveness: 200 while the process serves HTTP", "operationId": "healthz",
                             "responses": {"200": _json({"type": "object"}, "alive")}}},
        "/readyz": {"get": {"summary": "Readiness: 503 while the log or the shared state cannot be written",
                            "operationId": "readyz",
                            "responses": {"200": _json({"type": "object"}, "ready"), **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)", "operationId": "metrics",
                             "responses": {"200": {"description": "the metrics",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                  "responses": {"200": _json({"type": "object"}, "the OpenAPI document")}}},
        "/": {"get": {"summary": "The live risk dashboard (HTML)", "operationId": "page",
                      "responses": {"200": {"description": "the page", "content": {"text/html": {
                          "schema": {"type": "string"}}}}}}},
        "/static/{name}": {"get": {"summary": "The dashboard's script and style", "operationId": "static",
                                   "parameters": [{"name": "name", "in": "path", "required": True,
                                                   "schema": {"type": "string"}}],
                                   "responses": {"200": {"description": "the file", "content": {
                                       "text/javascript": {"schema": {"type": "string"}}}}, **_errors(404)}}},
    }  # fmt: skip
    arm = {"type": "object", "required": ["requests"], "description": "one arm's metrics in the interval"}
    schemas: dict[str, Any] = {
        "Snapshot": {"type": "object", "required": ["test_id", "timestamp", "champion", "challenger"], "properties": {
            "test_id": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
            "interval_seconds": {"type": "number", "default": 30}, "rollout_percent": {"type": "number"},
            "champion": arm, "challenger": arm}},
        "Decision": {"type": "object", "required": ["decision_id", "test_id", "timestamp", "action"], "properties": {
            "decision_id": {"type": "string"}, "test_id": {"type": "string"}, "timestamp": {"type": "string"},
            "action": {"enum": _ACTIONS}, "confidence": {"type": "number"}, "reason": {"type": "string"},
            "triggered_by": {"type": ["string", "null"]}, "risk_score": {"type": "number"},
            "risk_level": {"enum": _LEVELS}, "conditions": {"type": "array", "items": {"type": "object"}},
            "target_rollout_percent": {"type": ["number", "null"]}, "actions": {"type": "array"},
            "enforced": {"type": "boolean"}, "policy": _ref("PolicyRef"), "test_status": {"type": "string"},
            "label_lag_seconds": {"type": ["object", "null"], "description": "seconds each arm's labels lag behind",
                                  "properties": {"champion": {"type": "number"}, "challenger": {"type": "number"}}}}},
        "Test": {"type": "object", "required": ["test_id", "test_status"], "properties": {
            "test_id": {"type": "string"},
            "test_status": {"enum": ["running", "reduced", "rolled_back", "rollback_in_progress"]},
            "target_rollout_percent": {"type": ["number", "null"]}, "rolled_back_at": {"type": ["string", "null"]},
            "decisions": {"type": "integer"}, "last_decision": _ref("Decision")}},
        "Rollback": {"type": "object", "required": ["rollback_id", "test_id", "status", "phases", "steps"]},
        "Verdict": {"type": "object", "required": ["action", "test_status", "policy"], "properties": {
            "test_id": {"type": "string"}, "action": {"enum": [*_ACTIONS, None]},
            "risk_score": {"type": ["number", "null"]}, "risk_level": {"enum": [*_LEVELS, None]},
            "reason": {"type": "string"},
            "test_status": {"enum": ["running", "reduced", "rolled_back", "rollback_in_progress", "no_data"]},
            "policy": _ref("PolicyRef")}},
        "FlaggerPayload": {"type": "object", "properties": {
            "name": {"type": "string"}, "namespace": {"type": "string"}, "phase": {"type": "string"},
            "metadata": {"type": "object", "properties": {"test_id": {"type": "string"}},
                         "additionalProperties": {"type": "string"}}}},
        "FlaggerAnswer": {"type": "object", "required": ["test_id", "hook", "reason"], "properties": {
            "test_id": {"type": "string"}, "hook": {"type": "string"}, "phase": {"type": ["string", "null"]},
            "action": {"enum": [*_ACTIONS, None]}, "reason": {"type": "string"}}},
        "PolicyRef": {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "integer"}, "digest": {"type": "string"}}},
        "Identity": {"type": "object", "required": ["identity", "via", "roles", "permissions"], "properties": {
            "identity": {"type": ["string", "null"]}, "via": {"enum": ["token", "jwt", "mtls", "anonymous"]},
            "roles": {"type": "array", "items": {"enum": ["gateway", "operator", "auditor", "viewer"]}},
            "permissions": {"type": "array", "items": {"type": "string"}}}},
        "AuditRecord": {"type": "object", "required": ["seq", "test_id", "hash", "snapshot", "decision"], "properties": {
            "seq": {"type": "integer"}, "test_id": {"type": "string"},
            "received_at": {"type": "string", "format": "date-time"}, "prev_hash": {"type": "string"},
            "hash": {"type": "string"}, "snapshot": _ref("Snapshot"), "decision": _ref("Decision")}},
        "Problem": {"type": "object", "required": ["type", "title", "status", "detail", "code"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "code": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object", "required": ["field", "message"], "properties": {
                "field": {"type": "string"}, "message": {"type": "string"}}}}}},
    }  # fmt: skip
    _access_errors(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "abguard", "version": VERSION, "description": "Guarding ML model A/B tests over HTTP/JSON"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a static token (abguard auth token) or a JWT from the auth file's issuer",
                },
                "clientCertificate": {"type": "mutualTLS", "description": "a client certificate the auth file maps"},
                "dashboardCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "abguard_token",
                    "description": "set by POST /v1/session; changes also need X-Abguard-Dashboard: 1",
                },
            },
        },
        # with an auth file (serve --auth); health, metrics (unless closed), this document and the page stay open
        "security": [{"bearer": []}, {"clientCertificate": []}, {"dashboardCookie": []}],
    }
