"""Unleash: a test's flag is a feature whose flexibleRollout strategy holds the challenger share.

Through the Admin API (the paths of Unleash 8's OpenAPI document, /docs/openapi.json), with an
admin token in the Authorization header:

- set_rollout: create the feature if it is missing (POST /api/admin/projects/{p}/features), then
  add the flexibleRollout strategy (POST .../features/{f}/environments/{e}/strategies) or update
  the one there (PUT .../strategies/{id}), and only then turn the environment on
  (POST .../environments/{e}/on): Unleash gives a feature turned on without a strategy to
  everyone, so the order matters. Unleash's SDKs bucket users into whole percents, so the share is
  rounded to one.
- roll_back: turn the environment off (POST .../environments/{e}/off). A feature that does not
  exist yet is created, which leaves it off: the rollback is then written down, and a wrong
  project fails here rather than passing for done.

Other strategies on the feature environment are left alone; abguard manages the first
flexibleRollout one (the one whose groupId is the flag, if several).
"""

from __future__ import annotations

import json
import math
import urllib.parse
from typing import Any

from . import _http
from .base import DEFAULT_TIMEOUT, FlagError, check_percent

STRATEGY = "flexibleRollout"
# The fields of a strategy that PUT accepts back (updateFeatureStrategySchema).
_UPDATABLE = ("name", "title", "sortOrder", "constraints", "variants", "segments", "parameters")


def whole_percent(percent: float) -> int:
    """The share as Unleash's rollout parameter: a whole percent, halves rounded up."""
    return math.floor(check_percent(percent) + 0.5)


class UnleashProvider:
    """Flips one Unleash project's features in one environment."""

    name = "unleash"

    def __init__(
        self,
        url: str,
        token: str,
        project: str = "default",
        environment: str = "development",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        self.project = project
        self.environment = environment
        self.timeout = timeout
        self._token = token

    def set_rollout(self, flag: str, percent: float) -> None:
        """The feature is on in the environment for `percent` of the users (stickiness: default)."""
        rollout = str(whole_percent(percent))
        environment = self._feature_environment(flag)
        strategies = [s for s in environment.get("strategies", []) if s.get("name") == STRATEGY]
        ours = next((s for s in strategies if s.get("parameters", {}).get("groupId") == flag), None)
        strategy = ours or (strategies[0] if strategies else None)
        if strategy is None:
            body = {"name": STRATEGY, "parameters": {"rollout": rollout, "stickiness": "default", "groupId": flag}}
            self._send("POST", f"{self._environment_path(flag)}/strategies", body)
        else:
            kept = strategy.get("parameters", {})
            parameters = {"stickiness": "default", "groupId": flag, **kept, "rollout": rollout}
            updated = {key: strategy[key] for key in _UPDATABLE if strategy.get(key) is not None}
            updated.update(parameters=parameters, disabled=False)
            strategy_id = urllib.parse.quote(str(strategy["id"]), safe="")
            self._send("PUT", f"{self._environment_path(flag)}/strategies/{strategy_id}", updated)
        if not environment.get("enabled"):
            self._send("POST", f"{self._environment_path(flag)}/on")

    def roll_back(self, flag: str) -> None:
        """The feature is off in the environment: every user gets the champion."""
        path = f"{self._environment_path(flag)}/off"
        if self._send("POST", path, allow=(404,)).status == 404:
            self._create_feature(flag)  # created off in every environment
            self._send("POST", path)

    def _feature_environment(self, flag: str) -> dict[str, Any]:
        """The feature's state in the environment, the feature created first if it does not exist."""
        answer = self._send("GET", self._environment_path(flag), allow=(404,))
        if answer.status == 404:
            self._create_feature(flag)
            answer = self._send("GET", self._environment_path(flag))
        try:
            document = json.loads(answer.body)
        except ValueError as error:
            raise FlagError(f"unleash: GET {self._environment_path(flag)}: not JSON: {answer.excerpt()}") from error
        if not isinstance(document, dict):
            raise FlagError(f"unleash: GET {self._environment_path(flag)}: not an object: {answer.excerpt()}")
        return document

    def _create_feature(self, flag: str) -> None:
        """Create the feature. Already there (409: another writer, or the 404 was about the environment):
        the call that is repeated next says which."""
        path = f"/api/admin/projects/{self._quote(self.project)}/features"
        self._send("POST", path, {"name": flag, "type": "experiment"}, allow=(409,))

    def _environment_path(self, flag: str) -> str:
        project, feature, environment = (self._quote(p) for p in (self.project, flag, self.environment))
        return f"/api/admin/projects/{project}/features/{feature}/environments/{environment}"

    @staticmethod
    def _quote(part: str) -> str:
        return urllib.parse.quote(part, safe="")

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None, allow: tuple[int, ...] = ()
    ) -> _http.Answer:
        headers = {"Authorization": self._token, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        answer = _http.call(method, self.url + path, data, headers, self.timeout, "unleash")
        if answer.status >= 300 and answer.status not in allow:
            raise FlagError(f"unleash: {method} {path}: HTTP {answer.status}: {answer.excerpt()}")
        return answer
