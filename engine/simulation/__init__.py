"""Synthetic A/A and regression studies through the real engine: a policy's false-alarm rate and
detection delay, measured. Pure and seeded: no I/O but loading the policy in worker processes.

    generator  snapshot streams of a healthy service, with effects on the challenger
    effects    what changes, by how much, from when (`accuracy:-0.07@2h`)
    runner     many tests of a scenario through `pipeline.Evaluator`, in one or more processes
    metrics    false cut-backs per test-day (Garwood interval), detection delays
    standard   the fixed study `make quality` runs
"""

from __future__ import annotations

from .effects import CONDITION, KINDS, Effect, EffectError, parse_effect, parse_sweep
from .generator import StreamConfig, stream
from .metrics import Delays, Detection, FalseCutBacks, Rate, detection, false_cutbacks, garwood
from .runner import PolicySource, StudyResult, StudySpec, TestRun, run_studies, run_test
from .standard import standard_studies

__all__ = [
    "CONDITION",
    "KINDS",
    "Delays",
    "Detection",
    "Effect",
    "EffectError",
    "FalseCutBacks",
    "PolicySource",
    "Rate",
    "StreamConfig",
    "StudyResult",
    "StudySpec",
    "TestRun",
    "detection",
    "false_cutbacks",
    "garwood",
    "parse_effect",
    "parse_sweep",
    "run_studies",
    "run_test",
    "standard_studies",
    "stream",
]
