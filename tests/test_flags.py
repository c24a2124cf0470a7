"""Feature-flag providers, each against the real thing: the OpenFeature flagd provider reading the file
abguard writes, a real unleash-server on PostgreSQL, a local HTTP receiver checking the signature."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext

from engine.contract.times import parse_time
from engine.integrations.flags import (
    FlagdFileProvider,
    FlagError,
    FlagProvider,
    UnleashProvider,
    WebhookProvider,
    build_provider,
    load_flags_config,
    verify_signature,
)
from engine.integrations.flags.flagd import weights
from engine.integrations.flags.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.support.unleash import Unavailable, UnleashServer, free_port, running_unleash

ROOT = Path(__file__).resolve().parent.parent
KEYS = [f"user-{n}" for n in range(2000)]

# --- flagd: the file abguard writes, read by the real OpenFeature SDK and flagd provider (file mode) ---


@pytest.fixture
def openfeature(tmp_path: Path) -> Iterator[Callable[[Path], OpenFeatureClient]]:
    """Opens the flag file with a fresh flagd provider in FILE mode and gives an OpenFeature client on it."""
    domains: list[str] = []

    def open_file(path: Path) -> OpenFeatureClient:
        domain = f"abguard-flags-{len(domains)}"
        provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path))
        api.set_provider_and_wait(provider, domain=domain)
        domains.append(domain)
        return api.get_client(domain=domain)

    yield open_file
    api.clear_providers()


def variants(client: OpenFeatureClient, flag: str) -> dict[str, int]:
    """How many of the 2000 targeting keys get each variant."""
    counts: dict[str, int] = {}
    for key in KEYS:
        details = client.get_string_details(flag, "missing", EvaluationContext(targeting_key=key))
        assert details.error_code is None, details.error_message
        counts[details.variant or "none"] = counts.get(details.variant or "none", 0) + 1
    return counts


def test_flagd_rollout_of_30_sends_about_30_percent_to_the_challenger_and_roll_back_sends_everyone_to_the_champion(
    tmp_path: Path, openfeature: Callable[[Path], OpenFeatureClient]
) -> None:
    path = tmp_path / "flags.json"
    provider: FlagProvider = FlagdFileProvider(path)

    provider.set_rollout("abtest-ranker", 30)
    split = variants(openfeature(path), "abtest-ranker")
    assert set(split) == {"challenger", "champion"}
    assert 0.25 <= split["challenger"] / len(KEYS) <= 0.35

    provider.roll_back("abtest-ranker")
    assert variants(openfeature(path), "abtest-ranker") == {"champion": len(KEYS)}
    definition = json.loads(path.read_text())["flags"]["abtest-ranker"]
    assert definition["defaultVariant"] == "champion"
    assert "targeting" not in definition


def test_flagd_share_that_is_not_a_whole_percent_is_written_as_relative_weights_flagd_reads(
    tmp_path: Path, openfeature: Callable[[Path], OpenFeatureClient]
) -> None:
    path = tmp_path / "flags.json"
    FlagdFileProvider(path).set_rollout("abtest-fine", 12.5)
    assert json.loads(path.read_text())["flags"]["abtest-fine"]["targeting"] == {
        "fractional": [["challenger", 12_500], ["champion", 87_500]]
    }
    split = variants(openfeature(path), "abtest-fine")
    assert 0.10 <= split["challenger"] / len(KEYS) <= 0.15


def test_flagd_weights_are_whole_percents_when_they_can_be() -> None:
    assert weights(30) == (30, 70)
    assert weights(0) == (0, 100)
    assert weights(100.0) == (100, 0)
    assert weights(0.001) == (1, 99_999)


def test_flagd_keeps_the_other_flags_and_the_fields_it_does_not_own(
    tmp_path: Path, openfeature: Callable[[Path], OpenFeatureClient]
) -> None:
    path = tmp_path / "flags.json"
    other = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", "off"]},
    }
    ours_before = {"state": "DISABLED", "variants": {"champion": "champion"}, "metadata": {"owner": "ml-platform"}}
    path.write_text(json.dumps({"flags": {"dark-mode": other, "abtest-ranker": ours_before}}))

    provider = FlagdFileProvider(path)
    provider.set_rollout("abtest-ranker", 40)
    provider.roll_back("abtest-ranker")
    provider.set_rollout("abtest-new", 5)

    document = json.loads(path.read_text())
    assert document["flags"]["dark-mode"] == other
    assert document["flags"]["abtest-ranker"]["metadata"] == {"owner": "ml-platform"}
    assert document["flags"]["abtest-ranker"]["state"] == "ENABLED"
    assert document["$schema"] == "https://flagd.dev/schema/v0/flags.json"
    client = openfeature(path)
    assert client.get_boolean_value("dark-mode", False, EvaluationContext("k", {"email": "a@example.com"})) is True
    assert client.get_string_value("abtest-ranker", "missing", EvaluationContext("k")) == "champion"


def test_flagd_file_is_always_parseable_while_it_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    provider = FlagdFileProvider(path)
    provider.set_rollout("abtest-ranker", 1)
    stop = threading.Event()
    broken: list[str] = []
    reads = 0

    def read_forever() -> None:
        nonlocal reads
        while not stop.is_set():
            text = path.read_text()
            reads += 1
            try:
                json.loads(text)["flags"]["abtest-ranker"]
            except (ValueError, KeyError) as error:
                broken.append(f"{error}: {text[:80]!r}")

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for step in range(300):
            provider.set_rollout("abtest-ranker", step % 100)
    finally:
        stop.set()
        reader.join()
    assert reads > 0
    assert broken == []
    assert [p.name for p in tmp_path.iterdir()] == ["flags.json"]  # no temporary file left behind


def test_flagd_concurrent_writers_in_one_process_do_not_lose_each_others_flags(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"

    def write(flag: str) -> None:
        provider = FlagdFileProvider(path)  # a provider each: the lock is per file, not per provider
        for percent in range(20):
            provider.set_rollout(flag, percent)

    threads = [threading.Thread(target=write, args=(f"abtest-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flags = json.loads(path.read_text())["flags"]
    assert sorted(flags) == [f"abtest-{n}" for n in range(8)]
    assert all(flag["targeting"]["fractional"][0] == ["challenger", 19] for flag in flags.values())


def test_flagd_roll_back_twice_writes_the_file_once(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    provider = FlagdFileProvider(path)
    provider.set_rollout("abtest-ranker", 50)
    provider.roll_back("abtest-ranker")
    written = path.stat().st_mtime_ns, path.stat().st_ino
    time.sleep(0.01)
    provider.roll_back("abtest-ranker")
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == written


def test_flagd_refuses_to_overwrite_a_file_that_is_not_flag_json(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text("{ not json")
    with pytest.raises(FlagError, match="is not JSON"):
        FlagdFileProvider(path).roll_back("abtest-ranker")
    assert path.read_text() == "{ not json"


def test_flagd_file_that_cannot_be_read_is_a_flag_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(FlagError, match=r"cannot read .*: Not a directory"):
        FlagdFileProvider(tmp_path / "a-file" / "flags.json").roll_back("abtest-ranker")


def test_flagd_failed_write_is_a_flag_error_and_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "flags.json"
    provider = FlagdFileProvider(path)
    provider.set_rollout("abtest-ranker", 30)
    before = path.read_text()

    def disk_full(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("engine.integrations.flags.flagd.os.replace", disk_full)
    with pytest.raises(FlagError, match=r"cannot write .*: No space left on device"):
        provider.roll_back("abtest-ranker")
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["flags.json"]


@pytest.mark.parametrize("percent", [-1, 100.5, float("nan"), float("inf")])
def test_a_share_outside_0_to_100_is_a_caller_error_not_a_flag_error(tmp_path: Path, percent: float) -> None:
    with pytest.raises(ValueError, match=r"percent must be within 0\.\.100"):
        FlagdFileProvider(tmp_path / "flags.json").set_rollout("abtest-ranker", percent)
    assert not (tmp_path / "flags.json").exists()


# --- Unleash: a real unleash-server on PostgreSQL, read back through its Admin API ---


@pytest.fixture(scope="session")
def unleash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnleashServer]:
    """unleash-server 8 on 127.0.0.1 on a fresh database (skipped, naming why, without Node or PostgreSQL)."""
    try:
        with running_unleash(tmp_path_factory.mktemp("unleash")) as server:
            yield server
    except Unavailable as missing:
        pytest.skip(f"no Unleash server for the flag tests: {missing}")


def admin_get(server: UnleashServer, flag: str) -> dict[str, Any]:
    """The feature's state in the test environment, as the Admin API reports it."""
    path = f"/api/admin/projects/{server.project}/features/{flag}/environments/{server.environment}"
    request = urllib.request.Request(server.url + path, headers={"Authorization": server.admin_token})
    with urllib.request.urlopen(request, timeout=10) as answer:
        document: dict[str, Any] = json.loads(answer.read())
        return document


def unleash_provider(server: UnleashServer, token: str | None = None, project: str | None = None) -> UnleashProvider:
    return UnleashProvider(
        server.url, token or server.admin_token, project or server.project, server.environment, timeout=10
    )


def rollouts(state: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["name"], s["parameters"].get("rollout"), s["parameters"].get("groupId")) for s in state["strategies"]]


def test_unleash_set_rollout_creates_the_feature_and_its_strategy_and_turns_it_on(unleash: UnleashServer) -> None:
    provider: FlagProvider = unleash_provider(unleash)
    provider.set_rollout("abtest-create", 30)
    state = admin_get(unleash, "abtest-create")
    assert state["enabled"] is True
    assert rollouts(state) == [("flexibleRollout", "30", "abtest-create")]
    assert state["strategies"][0]["parameters"]["stickiness"] == "default"


def test_unleash_set_rollout_again_updates_the_same_strategy(unleash: UnleashServer) -> None:
    provider = unleash_provider(unleash)
    provider.set_rollout("abtest-update", 30)
    strategy_id = admin_get(unleash, "abtest-update")["strategies"][0]["id"]
    provider.set_rollout("abtest-update", 12.5)  # Unleash's SDKs take whole percents: 13
    state = admin_get(unleash, "abtest-update")
    assert rollouts(state) == [("flexibleRollout", "13", "abtest-update")]
    assert state["strategies"][0]["id"] == strategy_id


def test_unleash_roll_back_turns_the_environment_off_and_twice_is_fine(unleash: UnleashServer) -> None:
    provider = unleash_provider(unleash)
    provider.set_rollout("abtest-rollback", 30)
    provider.roll_back("abtest-rollback")
    assert admin_get(unleash, "abtest-rollback")["enabled"] is False
    provider.roll_back("abtest-rollback")
    assert admin_get(unleash, "abtest-rollback")["enabled"] is False
    provider.set_rollout("abtest-rollback", 20)  # a restarted test turns it back on at its share
    state = admin_get(unleash, "abtest-rollback")
    assert state["enabled"] is True
    assert rollouts(state) == [("flexibleRollout", "20", "abtest-rollback")]


def test_unleash_roll_back_of_a_flag_never_set_leaves_it_created_and_off(unleash: UnleashServer) -> None:
    unleash_provider(unleash).roll_back("abtest-never-set")
    state = admin_get(unleash, "abtest-never-set")
    assert state["enabled"] is False


def test_unleash_wrong_token_is_a_flag_error_naming_the_status(unleash: UnleashServer) -> None:
    provider = unleash_provider(unleash, token="*:*.not-the-token")
    with pytest.raises(FlagError, match=r"HTTP 40[13]"):
        provider.roll_back("abtest-token")
    with pytest.raises(FlagError, match=r"HTTP 40[13]"):
        provider.set_rollout("abtest-token", 10)


def test_unleash_unknown_project_is_a_flag_error_not_a_silent_success(unleash: UnleashServer) -> None:
    with pytest.raises(FlagError, match="HTTP 404"):
        unleash_provider(unleash, project="no-such-project").roll_back("abtest-project")


def test_unleash_closed_port_is_a_flag_error() -> None:
    provider = UnleashProvider(f"http://127.0.0.1:{free_port()}", "*:*.token", timeout=2)
    with pytest.raises(FlagError, match="cannot connect"):
        provider.roll_back("abtest-ranker")


# --- Webhook: a local receiver that checks the signature as a real one would ---


class Receiver:
    """A local HTTP server that records each POST and answers with `status` after `delay` seconds."""

    def __init__(self, status: int = 204, delay: float = 0.0, location: str | None = None) -> None:
        self.status, self.delay, self.location = status, delay, location
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append((dict(self.headers.items()), body))
                time.sleep(receiver.delay)
                try:
                    self.send_response(receiver.status)
                    if receiver.location:
                        self.send_header("Location", receiver.location)
                    self.send_header("Content-Length", "18")
                    self.end_headers()
                    self.wfile.write(b"receiver says: no\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting, as the timeout test means it to

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/flags"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        started.append(Receiver(**kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_webhook_posts_a_signed_event_the_receiver_verifies(receiver: Callable[..., Receiver]) -> None:
    server = receiver()
    provider: FlagProvider = WebhookProvider(server.url, "s3cret", timeout=5)
    provider.set_rollout("abtest-ranker", 30)
    provider.roll_back("abtest-ranker")

    (headers, body), (rollback_headers, rollback_body) = server.received
    event = json.loads(body)
    assert {k: event[k] for k in ("event", "flag", "percent")} == {
        "event": "set_rollout",
        "flag": "abtest-ranker",
        "percent": 30.0,
    }
    assert parse_time(event["sent_at"]) == pytest.approx(time.time(), abs=60)
    assert headers[TIMESTAMP_HEADER] == event["sent_at"]
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify_signature("s3cret", body, headers[SIGNATURE_HEADER])
    assert not verify_signature("wrong-secret", body, headers[SIGNATURE_HEADER])
    assert not verify_signature("s3cret", body.replace(b"30.0", b"90.0"), headers[SIGNATURE_HEADER])
    assert not verify_signature("s3cret", body, None)
    assert not verify_signature("s3cret", body, headers[SIGNATURE_HEADER].removeprefix("sha256="))

    rollback = json.loads(rollback_body)
    assert (rollback["event"], rollback["flag"], rollback["percent"]) == ("rollback", "abtest-ranker", 0.0)
    assert verify_signature(b"s3cret", rollback_body, rollback_headers[SIGNATURE_HEADER])


def test_webhook_answer_500_is_a_flag_error_with_the_status_and_body(receiver: Callable[..., Receiver]) -> None:
    server = receiver(status=500)
    with pytest.raises(FlagError, match="HTTP 500: receiver says: no"):
        WebhookProvider(server.url, "s3cret").roll_back("abtest-ranker")


def test_webhook_redirect_is_not_followed_but_a_flag_error(receiver: Callable[..., Receiver]) -> None:
    target = receiver()
    server = receiver(status=302, location=target.url)
    with pytest.raises(FlagError, match="HTTP 302"):
        WebhookProvider(server.url, "s3cret").roll_back("abtest-ranker")
    assert target.received == []


def test_webhook_slow_receiver_is_a_flag_error_within_the_timeout(receiver: Callable[..., Receiver]) -> None:
    server = receiver(delay=2.0)
    started = time.monotonic()
    with pytest.raises(FlagError, match=r"within 0.3 s"):
        WebhookProvider(server.url, "s3cret", timeout=0.3).roll_back("abtest-ranker")
    assert time.monotonic() - started < 1.5


def test_webhook_closed_port_is_a_flag_error() -> None:
    with pytest.raises(FlagError, match="cannot connect"):
        WebhookProvider(f"http://127.0.0.1:{free_port()}/flags", "s3cret", timeout=2).set_rollout("abtest-x", 5)


# --- The config file ---


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flags.yaml"
    path.write_text(text)
    return path


def test_config_maps_tests_to_flags_and_builds_each_provider(tmp_path: Path) -> None:
    config = load_flags_config(
        write_config(
            tmp_path,
            """
provider: unleash
flag_prefix: "abtest-"
flags: {checkout-ranker: ranker-v2}
unleash: {url: "http://127.0.0.1:4242/", environment: production, token_env: UNLEASH_ADMIN_TOKEN}
""",
        )
    )
    assert config.flag_key("checkout-ranker") == "ranker-v2"
    assert config.flag_key("search") == "abtest-search"
    assert config.unleash is not None
    assert (config.unleash.url, config.unleash.project, config.unleash.environment) == (
        "http://127.0.0.1:4242",
        "default",
        "production",
    )
    provider = build_provider(config, {"UNLEASH_ADMIN_TOKEN": "*:*.abc"})
    assert isinstance(provider, UnleashProvider)
    assert provider.name == "unleash"

    flagd = load_flags_config(write_config(tmp_path, "provider: flagd\nflagd: {path: out/flags.json}\n"))
    assert flagd.flagd is not None
    assert flagd.flagd.path == tmp_path / "out" / "flags.json"  # relative to the config file
    assert build_provider(flagd, {}).name == "flagd"

    webhook = load_flags_config(
        write_config(tmp_path, "provider: webhook\nwebhook: {url: 'https://x.example/hook', secret_env: HOOK_SECRET}\n")
    )
    assert build_provider(webhook, {"HOOK_SECRET": "s"}).name == "webhook"


def test_shipped_example_config_loads() -> None:
    config = load_flags_config(ROOT / "deploy" / "flags" / "flags.yaml")
    assert config.provider in ("flagd", "unleash", "webhook")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- provider: flagd\n", "flags config: (top level): must be a mapping"),
        ("provider: launchdarkly\n", "flags config: provider: must be one of flagd, unleash, webhook"),
        ("provider: flagd\nflagd: {path: f.json}\nflag_prefx: x\n", "flags config: flag_prefx: unknown field"),
        ("provider: flagd\n", "flags config: flagd: is required when provider is flagd"),
        ("provider: flagd\nflagd: {path: flags.yaml}\n", "flags config: flagd.path: must be a .json file"),
        ("provider: flagd\nflagd: {}\n", "flags config: flagd.path: is required"),
        ("provider: flagd\nflagd: {path: f.json}\nflags: {t1: 3}\n", "flags config: flags.t1: must map a test id"),
        ("provider: unleash\nunleash: {token_env: T}\n", "flags config: unleash.url: is required"),
        ("provider: unleash\nunleash: {url: 'ftp://h', token_env: T}\n", "flags config: unleash.url: must be an http"),
        ("provider: unleash\nunleash: {url: 'http://h'}\n", "flags config: unleash.token_env: is required"),
        (
            "provider: unleash\nunleash: {url: 'http://h', token_env: '*:*.abc123'}\n",
            "flags config: unleash.token_env: must name an environment variable",
        ),
        ("provider: unleash\nunleash: {url: 'http://h', token_env: T, env: p}\n", "flags config: unleash.env: unknown"),
        (
            "provider: webhook\nwebhook: {url: 'http://h', secret_env: S, timeout: -1}\n",
            "flags config: webhook.timeout: must be seconds",
        ),
        ("provider: webhook\nwebhook: {url: 'http://h', secret: abc}\n", "flags config: webhook.secret: unknown field"),
    ],
)
def test_bad_config_is_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        load_flags_config(write_config(tmp_path, text))


def test_missing_secret_fails_when_the_provider_is_built_naming_the_variable(tmp_path: Path) -> None:
    text = "provider: unleash\nunleash: {url: 'http://h', token_env: TOK}\n"
    config = load_flags_config(write_config(tmp_path, text))
    with pytest.raises(ValueError, match=r"flags config: unleash\.token_env: the environment variable TOK is not set"):
        build_provider(config, {})


def test_missing_config_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"flags config: .*nope\.yaml: cannot read"):
        load_flags_config(tmp_path / "nope.yaml")
