"""The risk dashboard in a real headless browser (Playwright driving Debian's chromium): it loads
with no console errors, shows a rolled-back test with its reason after the bundled scenarios, and
updates live when a new decision arrives."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    assert problems == []
    page.close()
