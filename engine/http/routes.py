"""Every HTTP route: path, the handler's name on the API, method, and what a caller needs. One table,
read by the app (to route and guard) and by the OpenAPI document (to say what each route can answer)."""

from __future__ import annotations

from ..security.roles import Permission
from .access import HEALTH, IDENTIFIED, METRICS, OPEN, Need

ROUTES: tuple[tuple[str, str, str, Need], ...] = (
    ("/v1/evaluate", "evaluate", "POST", Permission.EVALUATE),
    ("/v1/whoami", "whoami", "GET", IDENTIFIED),
    ("/v1/session", "open_session", "POST", IDENTIFIED),
    ("/v1/session", "close_session", "DELETE", OPEN),
    ("/v1/tests", "tests", "GET", Permission.READ),
    ("/v1/policy", "policy", "GET", Permission.READ),
    ("/v1/policy/reload", "reload", "POST", Permission.OPERATE),
    ("/v1/tests/{test_id:path}/decisions", "decisions", "GET", Permission.READ),
    ("/v1/tests/{test_id:path}/audit", "audit", "GET", Permission.AUDIT),
    ("/v1/tests/{test_id:path}/rollbacks", "rollbacks", "GET", Permission.READ),
    ("/v1/tests/{test_id:path}/rollbacks/{rollback_id}/steps", "report_step", "POST", Permission.REPORT),
    ("/v1/tests/{test_id:path}/rollback", "rollback", "POST", Permission.OPERATE),
    ("/v1/tests/{test_id:path}/restart", "restart", "POST", Permission.OPERATE),
    ("/v1/tests/{test_id:path}/verdict", "verdict", "GET", Permission.READ),
    ("/v1/tests/{test_id:path}/dashboard", "dashboard", "GET", Permission.READ),
    ("/v1/tests/{test_id:path}", "test", "GET", Permission.READ),
    ("/v1/flagger/{hook}", "flagger", "POST", Permission.READ),
    ("/v1/watch", "watch", "GET", Permission.READ),
    ("/healthz", "healthz", "GET", HEALTH),
    ("/readyz", "readyz", "GET", HEALTH),
    ("/metrics", "metrics_text", "GET", METRICS),
    ("/openapi.json", "openapi", "GET", OPEN),
    ("/", "page", "GET", OPEN),
    ("/static/{name}", "static", "GET", OPEN),
)
