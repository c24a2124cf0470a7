"""Pull mode against a real Prometheus (Debian's `prometheus`) scraping a small model-serving
exporter this test runs: `abguard serve --pull` builds each snapshot from PromQL and decides; when
the exporter degrades the challenger's accuracy, the test ends rolled back."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from engine.pull import PullConfigError, parse_pull_config
from tests.test_http import Server, start, wait_ready

PROMETHEUS = shutil.which("prometheus")
WAIT = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Exporter:
    """A model-serving service's metrics: champion v1 and challenger v2 of one ranker."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["service", "model"]
        self.requests = Counter("model_requests", "requests served", labels, registry=self.registry)
        self.labeled = Counter("model_labeled", "predictions with ground truth", labels, registry=self.registry)
        self.correct = Counter("model_correct", "correct predictions", labels, registry=self.registry)
        self.errors = Counter("model_errors", "errors", [*labels, "kind"], registry=self.registry)
        self.latency = Histogram(
            "model_latency_ms", "latency", labels, buckets=(0.5, 1, 1.5, 2, 3, 5, 10, 25), registry=self.registry
        )
        self.rollout = Gauge("abtest_rollout_percent", "challenger share", ["service"], registry=self.registry)
        self.challenger_accuracy = 0.92
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_traffic, daemon=True)
        self._thread.start()

    def _serve_traffic(self) -> None:
        """Every 0.1 s: 300 champion and 100 challenger requests, a third of them labelled."""
        rng = random.Random(7)
        self.rollout.labels("ranker").set(25)
        while not self._stop.wait(0.1):
            for model, requests, accuracy in (("v1", 300, 0.92), ("v2", 100, self.challenger_accuracy)):
                self.requests.labels("ranker", model).inc(requests)
                labeled = requests // 3
                self.labeled.labels("ranker", model).inc(labeled)
                self.correct.labels("ranker", model).inc(sum(rng.random() < accuracy for _ in range(labeled)))
                self.errors.labels("ranker", model, "timeout").inc(rng.random() < 0.5)
                for _ in range(20):
                    self.latency.labels("ranker", model).observe(rng.gauss(1.2, 0.2))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.shutdown()


@dataclass
class RunningPrometheus:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    made = Exporter()
    yield made
    made.close()


@pytest.fixture(scope="module")
def prometheus(exporter: Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed: run .ci/deps/prometheus.sh (apt prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "ranker", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}
                ],
            }
        )
    )
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        assert process.poll() is None, (folder / "prometheus.log").read_text()
        assert time.monotonic() < deadline, "prometheus not ready"
        time.sleep(0.2)
    yield RunningPrometheus(url, process)
    process.terminate()
    process.wait(15)
    log.close()


def source_config(url: str) -> dict[str, Any]:
    arm = 'service="$service",model="$model"'
    per_interval = "sum(rate({metric}{{" + arm + "}}[$window])) * $interval"
    quantile = "histogram_quantile({q}, sum by (le) (rate(model_latency_ms_bucket{{" + arm + "}}[$window])))"
    return {
        "prometheus": url,
        "interval": "2s",
        "window": "5s",
        "timeout": "3s",
        "tests": [
            {
                "test_id": "pulled-ranker",
                "labels": {"service": "ranker"},
                "arms": {"champion": {"model": "v1"}, "challenger": {"model": "v2"}},
                "rollout_percent": 'max(abtest_rollout_percent{service="$service"})',
            }
        ],
        "queries": {
            "requests": per_interval.format(metric="model_requests_total"),
            "labeled": per_interval.format(metric="model_labeled_total"),
            "correct": per_interval.format(metric="model_correct_total"),
            "errors.timeout": "sum(rate(model_errors_total{" + arm + ',kind="timeout"}[$window])) * $interval',
            "latency_ms.p50": quantile.format(q=0.5),
            "latency_ms.p95": quantile.format(q=0.95),
            "latency_ms.p99": quantile.format(q=0.99),
            "latency_ms.mean": (
                "sum(rate(model_latency_ms_sum{"
                + arm
                + "}[$window])) / sum(rate(model_latency_ms_count{"
                + arm
                + "}[$window]))"
            ),
        },
    }


def test_pull_mode_decides_from_prometheus_and_rolls_back_when_the_challenger_degrades(
    exporter: Exporter, prometheus: RunningPrometheus, tmp_path: Path
) -> None:
    config = tmp_path / "pull.yaml"
    config.write_text(yaml.safe_dump(source_config(prometheus.url)))
    time.sleep(6)  # a window's worth of scrapes
    process, started = start(tmp_path / "data", "--pull", str(config))
    server = Server(started["http"], started["listen"], process)
    try:
        wait_ready(server)
        healthy = wait_for(server, lambda verdict: verdict["action"] is not None)
        assert healthy["action"] in ("continue", "increase_monitoring"), healthy
        _, _, page = server.call("GET", "/v1/tests/pulled-ranker/decisions?page_size=1")
        _, _, test = server.call("GET", "/v1/tests/pulled-ranker")
        assert test["target_rollout_percent"] == 25.0  # the rollout share came from its own query
        exporter.challenger_accuracy = 0.55
        degraded_at = time.monotonic()
        verdict = wait_for(server, lambda verdict: verdict["action"] in ("rollback", "immediate_rollback"))
        assert "accuracy" in verdict["reason"]
        assert time.monotonic() - degraded_at < WAIT
        _, _, decisions = server.call("GET", "/v1/tests/pulled-ranker/decisions?page_size=500")
        oldest = decisions["decisions"][-1]
        assert oldest["conditions"][0]["name"] == "accuracy"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert '"event":"pulled"' in out
    assert page["decisions"][0]["test_id"] == "pulled-ranker"


def wait_for(server: Server, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        status, _, verdict = server.call("GET", "/v1/tests/pulled-ranker/verdict")
        assert status == 200
        if done(verdict):
            return dict(verdict)
        assert time.monotonic() < deadline, verdict
        time.sleep(0.5)


def test_the_snapshot_carries_the_values_prometheus_answers(exporter: Exporter, prometheus: RunningPrometheus) -> None:
    from engine.pull import Prometheus, snapshot

    config = parse_pull_config(source_config(prometheus.url))
    time.sleep(6)
    body, problems = snapshot(config, Prometheus(prometheus.url, 3), config.tests[0], time.time())
    assert problems == [] and body is not None
    champion, challenger = body["champion"], body["challenger"]
    assert 4000 < champion["requests"] < 8000 and 1400 < challenger["requests"] < 2600  # 3000/s and 1000/s x 2 s
    assert abs(champion["labeled"] / champion["requests"] - 1 / 3) < 0.02
    assert 0.5 < champion["latency_ms"]["p50"] < 2.0 and champion["latency_ms"]["mean"] > 0
    assert body["rollout_percent"] == 25.0 and body["interval_seconds"] == 2.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prometheus": "ftp://x"}, "prometheus: is required"),
        ({"interval": "soon"}, "interval: 'soon' is not a duration"),
        ({"queries": {"labeled": "x"}}, "queries: is required, with at least `requests`"),
        ({"queries": {"requests": "x", "bogus": "y"}}, "queries.bogus: not a snapshot field"),
        ({"queries": {"requests": "x", "latency_ms.p50": "y"}}, "latency_ms needs all of p50, p95, p99 and mean"),
        ({"queries": {"requests": 'sum(x{a="$nothere"})'}}, "queries.requests: $nothere is not defined"),
        (
            {"tests": [{"test_id": "t", "arms": {"champion": {}}}]},
            "tests[0].arms: needs exactly champion and challenger",
        ),
        ({"tests": []}, "tests: is required"),
        ({"extra": 1}, "extra: unknown field"),
    ],
)
def test_a_bad_pull_config_is_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(PullConfigError) as refused:
        parse_pull_config({**source_config("http://127.0.0.1:9"), **change})
    assert message in str(refused.value)


def test_the_shipped_example_source_loads() -> None:
    from engine.pull import load_pull_config

    config = load_pull_config(Path(__file__).resolve().parent.parent / "deploy" / "pull" / "prometheus-source.yaml")
    assert config.interval == 30.0 and [t.test_id for t in config.tests] == ["checkout-ranker"]
