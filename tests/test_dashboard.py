"""The risk dashboard in a real headless browser (Playwright driving Debian's chromium): it loads
with no console errors, shows a rolled-back test with its reason after the bundled scenarios, and
updates live when a new decision arrives. Behind `serve --auth FILE` it asks for a token, shows who
is signed in, keeps a viewer's page read-only, and lets an operator roll a test back by its buttons."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format

from engine.api.v1 import risk_pb2 as pb
from engine.api.v1 import risk_pb2_grpc as rpc
from engine.security.identity import new_token, token_hash
from tests.test_http import Server, evaluate_grpc, running, scenario

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("dashboard") / "data") as server:
        evaluate_grpc(server, scenario("healthy") + scenario("accuracy_regression"))
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: run .ci/deps/chromium.sh (apt chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def test_the_page_shows_the_rolled_back_test_with_its_reason_and_updates_live(
    served: Server, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"http://{served.http}/")
    page.locator("#content:not([hidden])").wait_for(timeout=10_000)
    row = page.locator('#tests tr[data-test="accuracy-regression"]')
    row.wait_for(timeout=10_000)
    assert "rollback_in_progress" in row.inner_text()
    page.locator("#detail:not([hidden])").wait_for(timeout=10_000)
    assert page.locator("#detail-title").inner_text().startswith("accuracy-regression")
    reason = page.locator("#detail-reason").inner_text()
    assert "automatic_critical_risk" in reason and "accuracy" in reason
    assert page.locator("#conditions td.status-critical").first.inner_text() == "critical"
    assert page.locator("#chart circle").count() > 0  # the decisions that were not continue
    assert "automatic_critical_risk" in page.locator("#rollbacks").inner_text()
    page.locator("#live.on").wait_for(timeout=10_000)
    page.screenshot(path=str(tmp_path / "dashboard.png"))  # it renders (docs/dashboard.png is made the same way)

    row = {**scenario("healthy")[0], "test_id": "arrived-live"}
    status, _, _ = served.call("POST", "/v1/evaluate", row)
    assert status == 200
    page.locator('#tests tr[data-test="arrived-live"]').wait_for(timeout=10_000)  # no reload: from the SSE stream
    assert "running" in page.locator('#tests tr[data-test="arrived-live"]').inner_text()
    # no auth file: nothing to sign in to, and everyone may act (whoami lists every permission)
    assert page.locator("#signin").is_hidden() and page.locator("#who").is_hidden()
    assert page.locator("#sign-out").is_hidden()
    assert page.locator("#actions .open-rollback").is_visible() and page.locator("#reload-policy").is_visible()
    assert problems == []
    page.close()


def test_without_an_auth_file_a_rollback_by_the_button_names_who_asked(served: Server, browser: Any) -> None:
    """The server then knows no one, so the form asks who requests the rollback (it is recorded)."""
    page, problems = _page(browser, served)
    page.locator('#tests tr[data-test="healthy"]').click()
    page.locator("#detail-title", has_text="healthy").wait_for(timeout=10_000)
    page.locator("#actions .open-rollback").click()
    page.locator("#actions .rollback .reason").fill("latency looks off")
    page.locator("#actions .rollback .requested-by").fill("dana")
    page.locator("#actions .confirm-rollback").click()
    page.locator("#actions .rollback .result.ok").wait_for(timeout=10_000)
    assert "requested by dana" in page.locator("#actions .rollback .result").inner_text()
    page.locator('#tests tr[data-test="healthy"] td.status-rollback_in_progress').wait_for(timeout=10_000)
    assert problems == []
    page.context.close()


# --- behind an auth file ----------------------------------------------------------------------------
EXPECTED = "Failed to load resource: the server responded with a status of {}"  # chromium logs refused fetches
NAMES = {"viewer": "vera-viewer", "operator": "otto-operator", "gateway": "gateway-feed"}


@dataclass
class Guarded:
    server: Server
    tokens: dict[str, str]  # role -> a token granting only that role

    def call(self, method: str, path: str, role: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{self.server.http}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {self.tokens[role]}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """`serve --auth FILE` with a viewer's and an operator's token (and a gateway's that feeds the snapshots)."""
    folder = tmp_path_factory.mktemp("guarded")
    tokens = {role: new_token() for role in NAMES}
    entries = [{"name": NAMES[role], "sha256": token_hash(token), "roles": [role]} for role, token in tokens.items()]
    (folder / "auth.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    with running(folder / "data", "--auth", str(folder / "auth.yaml")) as server:
        rows = scenario("healthy") + scenario("accuracy_regression")
        rows += [{**row, "test_id": "to-roll-back"} for row in scenario("healthy")[:10]]
        rows += [{**row, "test_id": "signed-out-test"} for row in scenario("healthy")[:3]]
        with grpc.insecure_channel(server.grpc) as channel:
            stub = rpc.RiskServiceStub(channel)
            metadata = (("authorization", f"Bearer {tokens['gateway']}"),)
            for row in rows:
                snapshot = json_format.ParseDict(row, pb.Snapshot())
                stub.Evaluate(pb.EvaluateRequest(snapshot=snapshot), timeout=10, metadata=metadata)
        yield Guarded(server, tokens)


def _page(browser: Any, server: Server) -> tuple[Any, list[str]]:
    """A page in a fresh context (its own cookies), collecting console errors and page errors."""
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"http://{server.http}/")
    return page, problems


def _unexpected(problems: list[str], *statuses: int) -> list[str]:
    """Console errors other than chromium's note of an answer we expected to be refused (the 401 of
    whoami before sign-in, of a wrong token)."""
    allowed = tuple(EXPECTED.format(status) for status in statuses)
    return [text for text in problems if not text.startswith(allowed)]


def _refuse(page: Any, pattern: str, status: int, detail: str) -> None:
    """The server's refusal, as problem+json, for the next requests to `pattern` (a real 429 needs a
    flood, a real 403 a control a viewer never gets)."""
    code = {403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}[status]
    body = json.dumps({"status": status, "detail": detail, "code": code})
    page.route(pattern, lambda route: route.fulfill(status=status, content_type="application/problem+json", body=body))


def _sign_in(page: Any, token: str) -> None:
    page.locator("#signin:not([hidden])").wait_for(timeout=10_000)
    page.locator("#signin-token").fill(token)
    page.locator("#signin-submit").click()
    page.locator("#who:not([hidden])").wait_for(timeout=10_000)


def test_without_a_session_the_page_asks_for_a_token_and_names_a_wrong_one(guarded: Guarded, browser: Any) -> None:
    page, problems = _page(browser, guarded.server)
    page.locator("#signin:not([hidden])").wait_for(timeout=10_000)
    assert page.locator("#content").is_hidden() and page.locator("#tests tbody tr").count() == 0
    assert page.locator("#who").is_hidden() and page.locator("#sign-out").is_hidden()
    assert page.locator("#signin-error").is_hidden()
    page.locator("#signin-token").fill(new_token())  # well formed, but not in the auth file
    page.locator("#signin-submit").click()
    error = page.locator("#signin-error:not([hidden])")
    error.wait_for(timeout=10_000)
    assert "not one this server knows" in error.inner_text()  # the problem's detail, as the server wrote it
    assert page.locator("#content").is_hidden() and page.locator("#who").is_hidden()
    assert not any(cookie["name"] == "abguard_token" for cookie in page.context.cookies())
    assert _unexpected(problems, 401) == []
    page.context.close()


def test_a_viewer_sees_the_tests_and_the_detail_but_no_operator_control(guarded: Guarded, browser: Any) -> None:
    page, problems = _page(browser, guarded.server)
    _sign_in(page, guarded.tokens["viewer"])
    assert page.locator("#who").inner_text() == "signed in as vera-viewer (viewer)"
    assert page.locator("#sign-out").is_visible() and page.locator("#signin").is_hidden()
    row = page.locator('#tests tr[data-test="accuracy-regression"]')
    row.wait_for(timeout=10_000)
    assert "rollback_in_progress" in row.inner_text()
    page.locator("#detail:not([hidden])").wait_for(timeout=10_000)
    assert page.locator("#detail-title").inner_text().startswith("accuracy-regression")
    assert "automatic_critical_risk" in page.locator("#rollbacks").inner_text()
    page.locator('#tests tr[data-test="healthy"]').click()
    page.locator("#detail-title", has_text="healthy").wait_for(timeout=10_000)
    # read-only: no control that acts is in the DOM, for the selected test or the policy
    assert page.locator("#actions *").count() == 0 and page.locator("#reload-policy").count() == 0
    assert page.locator("#operator-bar *").count() == 0 and page.locator("form:not(#signin-form)").count() == 0
    page.locator("#live.on").wait_for(timeout=10_000)  # the cookie is what EventSource sends
    row = {**scenario("healthy")[0], "test_id": "seen-by-viewer"}
    assert guarded.call("POST", "/v1/evaluate", "gateway", row)[0] == 200
    page.locator('#tests tr[data-test="seen-by-viewer"]').wait_for(timeout=10_000)
    assert _unexpected(problems, 401) == []
    page.context.close()


def test_an_operator_rolls_a_test_back_by_the_button_and_the_record_names_them(guarded: Guarded, browser: Any) -> None:
    page, problems = _page(browser, guarded.server)
    _sign_in(page, guarded.tokens["operator"])
    assert page.locator("#who").inner_text() == "signed in as otto-operator (operator)"
    page.locator('#tests tr[data-test="to-roll-back"]').click()
    page.locator("#detail-title", has_text="to-roll-back").wait_for(timeout=10_000)
    assert "running" in page.locator('#tests tr[data-test="to-roll-back"]').inner_text()
    assert page.locator("#actions .requested-by").count() == 0  # the server records who is signed in
    page.locator("#actions .open-rollback").click()
    page.locator("#actions .rollback .reason").fill("challenger drops carts in checkout")
    page.locator("#actions .confirm-rollback").click()
    result = page.locator("#actions .rollback .result.ok")
    result.wait_for(timeout=10_000)
    assert "requested by otto-operator" in result.inner_text()
    page.locator('#tests tr[data-test="to-roll-back"] td.status-rollback_in_progress').wait_for(timeout=10_000)
    page.locator("#detail-title .status-rollback_in_progress").wait_for(timeout=10_000)
    assert "manual_rollback by otto-operator" in page.locator("#rollbacks").inner_text()
    status, listing = guarded.call("GET", "/v1/tests/to-roll-back/rollbacks", "operator")
    [record] = listing["rollbacks"]
    assert status == 200 and record["trigger"] == "manual_rollback"
    assert (record["requested_by"], record["reason"]) == ("otto-operator", "challenger drops carts in checkout")

    page.locator("#actions .open-restart").click()
    page.locator("#actions .restart .reason").fill("fixed upstream")
    page.locator("#actions .confirm-restart").click()
    page.locator("#actions .restart .result.ok").wait_for(timeout=10_000)
    page.locator('#tests tr[data-test="to-roll-back"] td.status-running').wait_for(timeout=10_000)

    page.locator("#reload-policy").click()
    page.locator("#notice.ok", has_text="policy in force: default").wait_for(timeout=10_000)
    assert _unexpected(problems, 401) == []
    page.context.close()


def test_refusals_show_the_problem_s_detail(guarded: Guarded, browser: Any) -> None:
    """403 and 429 from an action, and a 404, show the server's detail where the control is."""
    page, problems = _page(browser, guarded.server)
    _sign_in(page, guarded.tokens["operator"])
    page.locator('#tests tr[data-test="healthy"]').click()
    page.locator("#detail-title", has_text="healthy").wait_for(timeout=10_000)
    _refuse(page, "**/v1/policy/reload", 429, "otto-operator made more than 200 requests a second")
    page.locator("#reload-policy").click()
    page.locator("#notice.error", has_text="more than 200 requests a second").wait_for(timeout=10_000)
    assert "HTTP 429" in page.locator("#notice").inner_text()
    page.unroute("**/v1/policy/reload")
    _refuse(page, "**/v1/tests/healthy/restart", 403, "POST restart needs the operator role")
    page.locator("#actions .open-restart").click()
    page.locator("#actions .restart .reason").fill("try")
    page.locator("#actions .confirm-restart").click()
    refused = page.locator("#actions .restart .result.error")
    refused.wait_for(timeout=10_000)
    assert "HTTP 403" in refused.inner_text() and "needs the operator role" in refused.inner_text()
    assert page.locator("#who").is_visible()  # a refusal is not a sign-out
    assert _unexpected(problems, 401, 403, 429) == []
    page.context.close()


def test_signing_out_returns_to_the_form_and_an_ended_session_does_too(guarded: Guarded, browser: Any) -> None:
    page, problems = _page(browser, guarded.server)
    _sign_in(page, guarded.tokens["viewer"])
    page.locator('#tests tr[data-test="healthy"]').wait_for(timeout=10_000)
    page.locator("#sign-out").click()
    page.locator("#signin:not([hidden])").wait_for(timeout=10_000)
    assert page.locator("#content").is_hidden() and page.locator("#who").is_hidden()
    assert page.locator("#tests tbody tr").count() == 0 and page.locator("#signin-error").is_hidden()
    assert not any(cookie["name"] == "abguard_token" for cookie in page.context.cookies())
    page.reload()  # the server cleared the cookie: a new load asks again
    page.locator("#signin:not([hidden])").wait_for(timeout=10_000)

    _sign_in(page, guarded.tokens["operator"])
    page.locator('#tests tr[data-test="signed-out-test"]').wait_for(timeout=10_000)
    page.context.clear_cookies()  # the session ends under the page (expired, or signed out in another tab)
    page.locator('#tests tr[data-test="signed-out-test"]').click()
    error = page.locator("#signin-error:not([hidden])")
    error.wait_for(timeout=10_000)
    assert error.inner_text().startswith("Signed out:")
    assert page.locator("#content").is_hidden() and page.locator("#actions *").count() == 0
    assert page.locator("#reload-policy").count() == 0
    assert _unexpected(problems, 401) == []
    page.context.close()
