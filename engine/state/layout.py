"""A test's state as a fixed layout of numbers: written field by field, read back into the
structure a fresh state of the same policy has.

The policy fixes the structure (which windows, which detectors and comparisons, how wide each
row is, how long each window): decoding starts from `TestState.start(policy)`, the *template*,
and takes every class, callable and setting from it. The bytes carry only what the snapshots
changed: bucket counts, run evidence, times. Nothing derivable is carried: a window's total is
the sum of its buckets and the anomaly history's sorted columns and pair sums follow from its
rows, so they are recomputed on reading and can never disagree with what they summarise.

Every value read is checked: finite numbers, flags 0 or 1, counts that are whole and not
negative, lengths within the window's bucket count or the history's capacity, times in order,
evidence between 0 and the detector's cap, names the policy knows. Anything else raises
StateFormatError: the caller rebuilds the test from the log instead.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Mapping
from dataclasses import replace
from itertools import pairwise, repeat
from operator import mul

from ..contract.snapshot import MAX_LATENCY_BOUNDS, MAX_LATENCY_MS
from ..facts import TestWindows
from ..facts.accuracy import AccuracyWindow, Delivery
from ..facts.anomaly import RECENT, WIDTH, AnomalyHistory, Column, PairSums
from ..facts.cache import CacheWindow
from ..facts.confidence import ConfidenceWindows
from ..facts.errors import ErrorWindows, Tumbling
from ..facts.latency import ArmLatency, LatencyWindows
from ..facts.packed import EMPTY, Packed, floats
from ..facts.reading import ConditionWindow
from ..facts.sequential import Detector, Detectors
from ..facts.throughput import ThroughputWindow
from ..facts.windows import RollingSums
from ..pipeline import TestState
from ..policy.model import Policy
from ..stats.moments import SCALE
from ..stats.sequential import AT_ZERO, Run
from ..verdict.status import TestHistory
from .wire import Reader, StateFormatError, Writer

# The layout's version: bump it whenever what is written, or in which order, changes. The id that
# goes on the wire (`LAYOUT`) is derived from it, so two builds that disagree refuse each other.
LAYOUT_VERSION = 3  # 2: the accuracy window's label coverage per arm; 3: its latest delivery per arm
LAYOUT = int.from_bytes(hashlib.sha256(f"abguard-state-layout-{LAYOUT_VERSION}".encode()).digest()[:4], "big")
QUANTUM = float(SCALE)  # stats.quantize's grid: round(value * SCALE)
MAX_ROW_VALUE = 1e18  # an anomaly row's metrics (rates, ms, rps) are far below; past ~1e296 quantizing overflows
MAX_TEXT = 1 << 16  # a failure message, a trigger name, a timestamp (the blob's own size bounds it too)


class CannotEncodeError(ValueError):
    """A state this layout does not describe (a replay's remembered decisions, a window of another shape)."""


# --- writing --------------------------------------------------------------------------------------
def encode(state: TestState) -> bytes:
    """The state's bytes; CannotEncodeError for a state the layout does not hold (remembered decisions)."""
    if state.recent:
        raise CannotEncodeError("a state that remembers decisions (an Evaluator's) is not kept outside the process")
    w = Writer()
    w.opt_f64(state.last_time)
    w.f64(state.last_interval)
    w.float_map(state.indicator_since)
    w.float_map(state.rule_since)
    w.float_map(state.cuts)
    w.opt_text(state.history.rolled_back_at)
    w.opt_text(state.history.rolled_back_by)
    w.flag(state.history.reduced)
    w.text_map(state.windows.failed)
    w.count(len(state.windows.windows))
    for name, window in state.windows.windows.items():
        w.text(name)
        _put_window(w, window)
    return w.bytes()


def _put_window(w: Writer, window: object) -> None:
    if isinstance(window, AccuracyWindow):
        _put_sums(w, window.labels)
        _put_detectors(w, window.detectors)
        w.opt_f64(window.champion_covered)
        w.opt_f64(window.challenger_covered)
        for latest in (window.champion_latest, window.challenger_latest):
            w.flag(latest is not None)
            if latest is not None:
                w.numbers(latest)
    elif isinstance(window, LatencyWindows):
        for arm in (window.champion, window.challenger):
            w.flag(arm is not None)
            if arm is not None:
                w.flag(arm.bounds is not None)
                if arm.bounds is not None:
                    w.floats(floats(arm.bounds))
                _put_sums(w, arm.sums)
        _put_detectors(w, window.detectors)
    elif isinstance(window, ConfidenceWindows):
        for sums in (window.challenger_bins, window.champion_bins, window.baseline, window.duplicates):
            _put_sums(w, sums)
        _put_detectors(w, window.detectors)
    elif isinstance(window, ErrorWindows):
        _put_sums(w, window.champion)
        _put_sums(w, window.challenger)
        trend = window.trend
        w.opt_int(trend.index)
        w.whole(trend.requests)
        w.whole(trend.errors)
        w.opt_f64(trend.last_rate)
        w.whole(trend.rising)
        _put_detectors(w, window.detectors)
    elif isinstance(window, CacheWindow):
        _put_sums(w, window.counts)
        w.opt_int(window.entries)
    elif isinstance(window, ThroughputWindow):
        _put_sums(w, window.volume)
        _put_detectors(w, window.detectors)
    elif isinstance(window, AnomalyHistory):
        w.floats(window.times)
        w.floats(window.values)
        w.ints(window.pairs)
        w.whole(window.sequence)
    else:
        raise CannotEncodeError(f"no layout for a window of type {type(window).__name__}")


def _put_sums(w: Writer, sums: RollingSums) -> None:
    w.ints(sums.packed)  # the total is their sum: recomputed on reading


def _put_detectors(w: Writer, detectors: Detectors) -> None:
    w.count(len(detectors))
    for name, detector in detectors:
        w.text(name)
        w.count(len(detector.runs))
        for run in detector.runs:
            w.run(run.evidence, run.alarm, run.since, run.information, run.weighted)
        w.flag(detector.pending is not None)
        if detector.pending is not None:
            w.numbers(detector.pending)
        w.opt_f64(detector.began)


# --- reading --------------------------------------------------------------------------------------
def skeleton(template: TestState) -> str:
    """What the code makes of a policy's state, beyond its text: each window's shape, each detector's
    comparison and components. Part of the layout id, so a build that shapes a state otherwise
    refuses the other's states as another layout (quietly), not as a forgery."""
    parts: list[str] = []
    for name, window in template.windows.windows.items():
        parts.append(f"{name}:{type(window).__name__}")
        for value in (getattr(window, field) for field in KNOWN_FIELDS.get(type(window), ())):
            if isinstance(value, RollingSums):
                parts.append(f"sums({len(value.total)},{value.buckets},{value.window!r})")
            elif isinstance(value, tuple) and value and isinstance(value[0], tuple):
                for stem, detector in value:
                    comparison = detector.comparison
                    parts.append(f"{stem}:{len(detector.runs)}:{comparison!r}")
    return "|".join(parts)


def layout_id(template: TestState) -> int:
    return layout_number(f"{LAYOUT}|{skeleton(template)}")


def layout_number(text: str) -> int:
    """31 bits of the text's SHA-256: the stores keep it in a signed 32-bit column (PostgreSQL's INTEGER)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


class Names:
    """What the policy lets a state's mappings hold: its indicators, its rules, its traffic cuts."""

    def __init__(self, policy: Policy) -> None:
        self.indicators = frozenset(indicator.id for indicator in policy.indicators)
        self.rules = frozenset(rule.name for rule in policy.rules)
        self.cuts = frozenset(
            [f"rule:{rule.name}" for rule in policy.rules]
            + [f"{c.name}:{a.name}" for c in policy.conditions for a in c.actions]
            + [f"{c.name}:{a.name}" for c in policy.conditions for i in c.indicators for a in i.actions or ()]
        )
        self.conditions = frozenset(c.name for c in policy.conditions)


def decode(data: bytes, template: TestState, names: Names) -> TestState:
    """The state these bytes hold, in the template's structure; StateFormatError for anything else."""
    r = Reader(data)
    last_time = r.opt_f64("last_time")
    last_interval = r.f64("last_interval")
    if not last_interval > 0:
        raise StateFormatError(f"last_interval: {last_interval} is not positive")
    indicator_since = r.float_map("indicator_since", names.indicators)
    rule_since = r.float_map("rule_since", names.rules)
    cuts = r.float_map("cuts", names.cuts)
    for key, value in cuts.items():
        _within(f"cuts[{key!r}]", value, 0.0, math.inf)  # a target percent; a rule's factor may exceed 1
    for what, since in (("indicator_since", indicator_since), ("rule_since", rule_since)):
        for key, value in since.items():
            if last_time is None or value > last_time:
                raise StateFormatError(f"{what}[{key!r}]: {value} is after the state's last snapshot ({last_time})")
    history = TestHistory(
        r.opt_text("history.rolled_back_at", MAX_TEXT), r.opt_text("history.rolled_back_by", MAX_TEXT),
        r.flag("history.reduced"),
    )  # fmt: skip
    if history.rolled_back_at is None and history.rolled_back_by is not None:
        raise StateFormatError("history: rolled_back_by without rolled_back_at")
    failed = r.text_map("windows.failed", names.conditions)
    expected = template.windows.windows
    if r.count("windows", len(expected)) != len(expected):
        raise StateFormatError(f"windows: {len(expected)} conditions expected")
    windows: dict[str, ConditionWindow] = {}
    for name, shape in expected.items():
        found = r.text("windows", 64)
        if found != name:
            raise StateFormatError(f"windows: {found[:64]!r} where the policy has {name!r}")
        windows[name] = _window(r, name, shape)
    r.done()
    return TestState(
        TestWindows(windows, failed), last_time, last_interval, indicator_since, rule_since, history, (), cuts
    )


def _delivery(r: Reader, at: str) -> Delivery | None:
    """An arm's latest labels: (labeled, correct), 1 <= labeled and 0 <= correct <= labeled."""
    if not r.flag(at):
        return None
    values = r.numbers(at, 2)
    if len(values) != 2:
        raise StateFormatError(f"{at}: {len(values)} numbers, not (labeled, correct)")
    labeled, correct = values
    if not isinstance(labeled, int) or not isinstance(correct, int) or not 0 <= correct <= labeled or labeled < 1:
        raise StateFormatError(f"{at}: labeled {labeled!r} and correct {correct!r} are not counts with 1 <= labeled")
    return labeled, correct


def _window(r: Reader, name: str, shape: ConditionWindow) -> ConditionWindow:
    at = f"windows.{name}"
    if isinstance(shape, AccuracyWindow):
        labels, detectors = _sums(r, f"{at}.labels", shape.labels), _detectors(r, at, shape.detectors)
        theirs, mine = r.opt_f64(f"{at}.champion_covered"), r.opt_f64(f"{at}.challenger_covered")
        latest = _delivery(r, f"{at}.champion_latest"), _delivery(r, f"{at}.challenger_latest")
        return AccuracyWindow(labels, detectors, theirs, mine, *latest)
    if isinstance(shape, LatencyWindows):
        arms = _arm(r, f"{at}.champion", shape.window), _arm(r, f"{at}.challenger", shape.window)
        return LatencyWindows(shape.window, *arms, _detectors(r, at, shape.detectors))
    if isinstance(shape, ConfidenceWindows):
        return ConfidenceWindows(
            _sums(r, f"{at}.challenger_bins", shape.challenger_bins),
            _sums(r, f"{at}.champion_bins", shape.champion_bins),
            _sums(r, f"{at}.baseline", shape.baseline),
            _sums(r, f"{at}.duplicates", shape.duplicates),
            _detectors(r, at, shape.detectors),
        )
    if isinstance(shape, ErrorWindows):
        champion = _sums(r, f"{at}.champion", shape.champion)
        challenger = _sums(r, f"{at}.challenger", shape.challenger)
        trend = Tumbling(
            r.opt_int(f"{at}.trend.index"), _whole(r, f"{at}.trend.requests"), _whole(r, f"{at}.trend.errors"),
            r.opt_f64(f"{at}.trend.last_rate"), _whole(r, f"{at}.trend.rising"),
        )  # fmt: skip
        if trend.errors > trend.requests:
            raise StateFormatError(f"{at}.trend: {trend.errors} errors in {trend.requests} requests")
        if trend.last_rate is not None:
            _within(f"{at}.trend.last_rate", trend.last_rate, 0.0, math.inf)
        return ErrorWindows(shape.window, champion, challenger, trend, _detectors(r, at, shape.detectors))
    if isinstance(shape, CacheWindow):
        counts = _sums(r, f"{at}.counts", shape.counts)
        entries = r.opt_int(f"{at}.entries")
        if entries is not None and entries < 0:
            raise StateFormatError(f"{at}.entries: {entries} is negative")
        return CacheWindow(counts, entries)
    if isinstance(shape, ThroughputWindow):
        return ThroughputWindow(_sums(r, f"{at}.volume", shape.volume), _detectors(r, at, shape.detectors))
    if isinstance(shape, AnomalyHistory):
        return _anomaly(r, at, shape)
    raise StateFormatError(f"{at}: no layout for a window of type {type(shape).__name__}")


def _sums(r: Reader, at: str, shape: RollingSums) -> RollingSums:
    """A rolling window's buckets, checked, with its total recomputed from them."""
    packed = r.ints(at)
    width = len(shape.total)
    stride = width + 1
    if len(packed) % stride:
        raise StateFormatError(f"{at}: {len(packed)} numbers are not whole buckets of {stride}")
    if len(packed) > stride * shape.buckets:
        raise StateFormatError(f"{at}: {len(packed) // stride} buckets in a window of {shape.buckets}")
    if packed and packed[-stride] - packed[0] >= shape.buckets:
        raise StateFormatError(f"{at}: buckets {packed[0]} and {packed[-stride]} cannot both be in the window")
    indices = list(packed[0::stride])
    if indices != sorted(set(indices)):  # strictly increasing, checked in C
        raise StateFormatError(f"{at}: bucket indices out of order")
    columns = [packed[column::stride] for column in range(1, stride)]
    signed = not (isinstance(packed, array) and packed.typecode in "ILH")  # an unsigned array holds no negative
    if signed and any(min(values, default=0) < 0 for values in columns):
        raise StateFormatError(f"{at}: a negative count")
    total = tuple(sum(values) for values in columns)  # exact: whole numbers of any size
    return RollingSums(shape.make, shape.window, shape.buckets, _kept(packed), total)


def _kept(packed: Packed) -> Packed:
    """As the live windows hold it: the shared empty value when there is nothing."""
    return packed if len(packed) else EMPTY


def _arm(r: Reader, at: str, window: float) -> ArmLatency | None:
    if not r.flag(at):
        return None
    bounds: tuple[float, ...] | None = None
    if r.flag(f"{at}.bounds"):
        bounds = tuple(r.floats(f"{at}.bounds"))
        if not 1 <= len(bounds) <= MAX_LATENCY_BOUNDS:
            raise StateFormatError(f"{at}.bounds: {len(bounds)} bounds (1 to {MAX_LATENCY_BOUNDS})")
        if bounds[0] <= 0 or bounds[-1] > MAX_LATENCY_MS or any(b <= a for a, b in pairwise(bounds)):
            raise StateFormatError(f"{at}.bounds: upper bounds must be positive and strictly increasing")
    shape = ArmLatency.empty(window, bounds)
    return ArmLatency(bounds, _sums(r, f"{at}.sums", shape.sums))


def _detectors(r: Reader, at: str, shape: Detectors) -> Detectors:
    if r.count(f"{at}.detectors", len(shape)) != len(shape):
        raise StateFormatError(f"{at}.detectors: {len(shape)} detectors expected")
    out = []
    for name, template in shape:
        found = r.text(f"{at}.detectors", 64)
        if found != name:
            raise StateFormatError(f"{at}.detectors: {found[:64]!r} where the policy has {name!r}")
        out.append((name, _detector(r, f"{at}.{name}", template)))
    return tuple(out)


def _detector(r: Reader, at: str, template: Detector) -> Detector:
    boundary = template.comparison.settings.boundary
    if r.count(f"{at}.runs", len(template.runs)) != len(template.runs):
        raise StateFormatError(f"{at}.runs: {len(template.runs)} components expected")
    runs = []
    for index in range(len(template.runs)):
        where = f"{at}.runs[{index}]"
        evidence, alarm, since, information, weighted = r.run(where)
        _within(f"{where}.evidence", evidence, 0.0, boundary.cap)
        _within(f"{where}.information", information, 0.0, math.inf)
        if alarm != (evidence >= boundary.enter) and not (alarm and evidence > boundary.exit):
            raise StateFormatError(f"{where}.alarm: {alarm} does not fit evidence {evidence}")
        if evidence == 0.0 and (since is not None or alarm or information or weighted):
            raise StateFormatError(f"{where}: a run at zero evidence holds a run's data")
        if evidence > 0.0 and since is None:
            raise StateFormatError(f"{where}: a run with evidence has no start")
        run = Run(evidence, alarm, since, information, weighted)
        runs.append(AT_ZERO if run == AT_ZERO else run)
    pending = tuple(r.numbers(f"{at}.pending")) if r.flag(f"{at}.pending") else None
    began = r.opt_f64(f"{at}.began")
    if (pending is None) != (began is None):
        raise StateFormatError(f"{at}: a pending batch and its start are given together or not at all")
    return Detector(template.comparison, tuple(runs), pending, began)


def _anomaly(r: Reader, at: str, shape: AnomalyHistory) -> AnomalyHistory:
    """The history's rows and pairs, checked; its columns and pair sums recomputed from them."""
    times = r.floats(f"{at}.times")
    values = r.floats(f"{at}.values", allow_nan=True)
    pairs = r.ints(f"{at}.pairs")
    sequence = _whole(r, f"{at}.sequence")
    if len(times) > shape.capacity:
        raise StateFormatError(f"{at}.times: {len(times)} rows in a history of {shape.capacity}")
    if len(values) != WIDTH * len(times):
        raise StateFormatError(f"{at}.values: {len(values)} values for {len(times)} rows of {WIDTH}")
    if any(b < a for a, b in pairwise(times)):
        raise StateFormatError(f"{at}.times: not in order")
    if any(abs(value) > MAX_ROW_VALUE for value in values if not math.isnan(value)):
        raise StateFormatError(f"{at}.values: a metric beyond {MAX_ROW_VALUE:g} (the live history could not sum it)")
    if times and times[-1] - times[0] >= shape.max_age and len(times) > 1:
        raise StateFormatError(f"{at}.times: rows older than the longest window")
    if sequence < len(times):
        raise StateFormatError(f"{at}.sequence: {sequence} for {len(times)} rows")
    if len(pairs) % 3 or len(pairs) > 3 * (shape.capacity + RECENT + 1):
        raise StateFormatError(f"{at}.pairs: {len(pairs)} numbers are not (sequence, x, y) triples of the history")
    numbers = pairs[0::3]
    if any(b <= a for a, b in pairwise(numbers)) or (numbers and not 0 <= numbers[0] <= numbers[-1] < sequence):
        raise StateFormatError(f"{at}.pairs: sequence numbers out of order or outside 0 to {sequence - 1}")
    judged = values[: max(0, len(values) - WIDTH)]  # every row but the newest
    columns = tuple(_column(judged[index::WIDTH]) for index in range(WIDTH))
    xs, ys = list(pairs[1::3]), list(pairs[2::3])
    split = max(0, len(xs) - RECENT)  # the last RECENT pairs are "recent", the ones before "usual"
    usual, recent = _pair_sums(xs[:split], ys[:split]), _pair_sums(xs[split:], ys[split:])
    return replace(
        shape, times=times, values=values, columns=columns, pairs=_kept(pairs),
        usual=usual, recent=recent, sequence=sequence,
    )  # fmt: skip


def _column(values: array[float]) -> Column:
    """A metric's column as the live history keeps it: its finite values sorted, their exact sums
    (each value quantized as stats.quantize does, round(value * SCALE), in C through map)."""
    finite = sorted(value for value in values if not math.isnan(value))  # inf was refused on reading
    quantized = list(map(round, map(mul, finite, repeat(QUANTUM))))
    return Column(floats(finite), sum(quantized), sum(map(mul, quantized, quantized)))


def _pair_sums(xs: list[int], ys: list[int]) -> PairSums:
    """Exact sums of these (x, y) pairs, as PairSums.change would have added them one by one."""
    return PairSums(len(xs), sum(xs), sum(ys), sum(map(mul, xs, xs)), sum(map(mul, ys, ys)), sum(map(mul, xs, ys)))


def _whole(r: Reader, what: str) -> int:
    value = r.whole(what)
    if value < 0:
        raise StateFormatError(f"{what}: {value} is negative")
    return value


def _within(what: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise StateFormatError(f"{what}: {value} is outside [{low}, {high}]")


def check_covered(mapping: Mapping[type, tuple[str, ...]] | None = None) -> list[str]:
    """Fields of the state's classes this layout does not know: a new field needs a layout change."""
    from dataclasses import fields  # noqa: PLC0415

    known = mapping or KNOWN_FIELDS
    missing = []
    for cls, names in known.items():
        have = tuple(f.name for f in fields(cls))
        if have != names:
            missing.append(f"{cls.__name__}: fields {have}, the layout knows {names}")
    return missing


KNOWN_FIELDS: dict[type, tuple[str, ...]] = {
    TestState: ("windows", "last_time", "last_interval", "indicator_since", "rule_since", "history", "recent", "cuts"),
    TestHistory: ("rolled_back_at", "rolled_back_by", "reduced"),
    TestWindows: ("windows", "failed"),
    AccuracyWindow: (
        "labels",
        "detectors",
        "champion_covered",
        "challenger_covered",
        "champion_latest",
        "challenger_latest",
    ),
    LatencyWindows: ("window", "champion", "challenger", "detectors"),
    ArmLatency: ("bounds", "sums"),
    ConfidenceWindows: ("challenger_bins", "champion_bins", "baseline", "duplicates", "detectors"),
    ErrorWindows: ("window", "champion", "challenger", "trend", "detectors"),
    Tumbling: ("index", "requests", "errors", "last_rate", "rising"),
    CacheWindow: ("counts", "entries"),
    ThroughputWindow: ("volume", "detectors"),
    AnomalyHistory: ("capacity", "max_age", "times", "values", "columns", "pairs", "usual", "recent", "sequence"),
    Column: ("ordered", "total", "squares"),
    RollingSums: ("make", "window", "buckets", "packed", "total"),
    Detector: ("comparison", "runs", "pending", "began"),
    Run: ("evidence", "alarm", "since", "information", "weighted"),
}
