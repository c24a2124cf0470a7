"""Studies: many seeded synthetic tests of one scenario, decided by the real engine (`pipeline.Evaluator`).

Each test is its own stream (seed + test index) through its own Evaluator test; per decision the
runner keeps the time, the action, the risk score, the target traffic and which conditions were
triggered or critical. A rolled-back test decides `rollback` at 0% from then on until it is
restarted (`verdict.status`), so once a test is rolled back and every effect has begun and tripped
its condition, the runner stops deciding it: the rest of its decisions are known (`TestRun.implied`).

With `workers` > 1 the tests run in processes of the 'spawn' context; each worker loads the
policy itself from its folder, profile and environment (`PolicySource`) and builds its own
Evaluator, which is never pickled. Results are ordered by test, so they do not depend on the
number of workers.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..contract import Action, ConditionStatus, TestStatus, parse_snapshot
from ..pipeline import Evaluator
from ..policy.model import Policy
from ..policy.policyset import load_effective
from .effects import Effect
from .generator import StreamConfig, stream

ACTIONS = tuple(Action)  # an action's code is its rank: the order of the contract
CUT_BACK = Action.REDUCE_ROLLOUT.rank  # reduce_rollout, rollback, immediate_rollback: codes >= this
ROLLBACK = Action.ROLLBACK.rank
_ACTIVE = (ConditionStatus.TRIGGERED, ConditionStatus.CRITICAL)


@dataclass(frozen=True, slots=True)
class PolicySource:
    """Where a worker loads the effective policy from: what `abguard replay` takes."""

    folder: str = "policies"
    profile: str | None = "balanced"
    environment: str | None = None

    def load(self) -> Policy:
        """The effective policy; PolicyError (with every diagnostic) when it cannot be loaded."""
        return load_effective([self.folder], None if self.profile in (None, "none") else self.profile, self.environment)


@dataclass(frozen=True, slots=True)
class StudySpec:
    """A scenario and how many tests of it to run."""

    name: str
    config: StreamConfig
    tests: int = 20
    seed: int = 0

    @property
    def effects(self) -> tuple[Effect, ...]:
        return self.config.effects


@dataclass(slots=True)
class TestRun:
    """The decisions of one test, as columns. `implied` decisions follow the last one, all `rollback`."""

    __test__ = False  # not a pytest class

    index: int
    seed: int
    steps: int  # snapshots in the stream
    interval: float
    times: np.ndarray  # seconds from the test's start at each decision (the end of its interval)
    actions: np.ndarray  # int8: Action.rank
    scores: np.ndarray  # float64
    targets: np.ndarray  # float64, NaN where the decision gives no target
    triggered: np.ndarray  # int64 bit masks over the study's conditions: triggered or critical
    critical: np.ndarray  # int64 bit masks: critical
    causes: np.ndarray  # int8: index into `cause_names` of the decision's triggered_by ("" when none)
    cause_names: tuple[str, ...] = ("",)
    # at each decision that starts a cut-back episode: its index and the indicators counting then
    episode_indicators: tuple[tuple[int, tuple[str, ...]], ...] = ()

    @property
    def implied(self) -> int:
        """Decisions not evaluated because the test was already rolled back: each is `rollback` at 0%."""
        return self.steps - len(self.times)

    @property
    def decisions(self) -> int:
        return self.steps


@dataclass(slots=True)
class StudyResult:
    spec: StudySpec
    conditions: tuple[str, ...]  # the bit order of TestRun.triggered
    runs: list[TestRun] = field(default_factory=list)


def run_test(evaluator: Evaluator, config: StreamConfig, index: int, seed: int, stop: bool = True) -> TestRun:
    """One test through `evaluator`; with `stop`, ends once nothing but `rollback` can follow."""
    test_id = f"sim-{index}"
    evaluator.restart(test_id)
    names = [condition.name for condition in evaluator.policy.conditions]
    bit = {name: 1 << i for i, name in enumerate(names)}
    pending = {effect: bit.get(effect.condition, 0) for effect in config.effects}
    times: list[float] = []
    actions: list[int] = []
    scores: list[float] = []
    targets: list[float] = []
    triggered: list[int] = []
    critical: list[int] = []
    causes: list[int] = []
    cause_codes: dict[str, int] = {"": 0}
    episode_indicators: list[tuple[int, tuple[str, ...]]] = []
    was_cut = False
    steps = config.steps
    for step, data in enumerate(stream(config, test_id, seed)):
        end = (step + 1) * config.interval
        decision = evaluator.evaluate(parse_snapshot(data))
        active = crit = 0
        for condition in decision.conditions:
            if condition.status in _ACTIVE:
                active |= bit[condition.name]
                if condition.status == ConditionStatus.CRITICAL:
                    crit |= bit[condition.name]
        times.append(end)
        actions.append(decision.action.rank)
        scores.append(decision.risk_score)
        target = decision.target_rollout_percent
        targets.append(np.nan if target is None else target)
        triggered.append(active)
        critical.append(crit)
        causes.append(cause_codes.setdefault(decision.triggered_by or "", len(cause_codes)))
        is_cut = decision.action.rank >= CUT_BACK
        if is_cut and not was_cut:
            counting = (i.name for c in decision.conditions for i in c.indicators if i.counting)
            episode_indicators.append((step, tuple(counting)))
        was_cut = is_cut
        for effect in [e for e, mask in pending.items() if effect_seen(e, end, active, mask)]:
            del pending[effect]
        if stop and not pending and decision.test_status == TestStatus.ROLLED_BACK:
            break
    evaluator.restart(test_id)
    return TestRun(
        index,
        seed,
        steps,
        config.interval,
        np.array(times),
        np.array(actions, dtype=np.int8),
        np.array(scores),
        np.array(targets),
        np.array(triggered, dtype=np.int64),
        np.array(critical, dtype=np.int64),
        np.array(causes, dtype=np.int8),
        tuple(cause_codes),
        tuple(episode_indicators),
    )


def effect_seen(effect: Effect, end: float, active: int, mask: int) -> bool:
    """Whether this decision shows the effect: it has begun and its condition is triggered (or the
    policy has no such condition, so there is nothing to wait for)."""
    return end > effect.at and (mask == 0 or bool(active & mask))


def run_studies(
    source: PolicySource,
    studies: Sequence[StudySpec],
    workers: int = 1,
    policy: Policy | None = None,
    stop: bool = True,
) -> list[StudyResult]:
    """Every test of every study; `policy` (already loaded from `source`) saves loading it again in-process."""
    tasks = [(number, index) for number, study in enumerate(studies) for index in range(study.tests)]
    if workers <= 1:
        evaluator = Evaluator(policy or source.load())
        runs = [_one(evaluator, studies[number], index, stop) for number, index in tasks]
        names = tuple(c.name for c in evaluator.policy.conditions)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(source,)) as pool:
            chunks = _chunks(tasks, workers * 4)
            jobs = [pool.submit(_run_chunk, [(studies[n], i) for n, i in chunk], stop) for chunk in chunks]
            runs = [run for job in jobs for run in job.result()]
        names = tuple(c.name for c in (policy or source.load()).conditions)
    results = [StudyResult(study, names) for study in studies]
    for (number, _), run in zip(tasks, runs, strict=True):
        results[number].runs.append(run)
    return results


def _one(evaluator: Evaluator, study: StudySpec, index: int, stop: bool) -> TestRun:
    return run_test(evaluator, study.config, index, study.seed + index, stop)


def _chunks(tasks: list[tuple[int, int]], count: int) -> Iterable[list[tuple[int, int]]]:
    """Consecutive slices of about equal size, in order (so joining the results keeps the order)."""
    size = max(1, -(-len(tasks) // count))
    return (tasks[i : i + size] for i in range(0, len(tasks), size))


_worker: Evaluator | None = None


def _start_worker(source: PolicySource) -> None:
    global _worker  # noqa: PLW0603  # one Evaluator per worker process, built from the policy folder
    _worker = Evaluator(source.load())


def _run_chunk(items: list[tuple[StudySpec, int]], stop: bool) -> list[TestRun]:
    assert _worker is not None, "the worker was not started"
    return [_one(_worker, study, index, stop) for study, index in items]
