from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_CONTINUE: _ClassVar[Action]
    ACTION_INCREASE_MONITORING: _ClassVar[Action]
    ACTION_REDUCE_ROLLOUT: _ClassVar[Action]
    ACTION_ROLLBACK: _ClassVar[Action]
    ACTION_IMMEDIATE_ROLLBACK: _ClassVar[Action]

class RiskLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_LEVEL_UNSPECIFIED: _ClassVar[RiskLevel]
    RISK_LEVEL_LOW: _ClassVar[RiskLevel]
    RISK_LEVEL_MEDIUM: _ClassVar[RiskLevel]
    RISK_LEVEL_HIGH: _ClassVar[RiskLevel]
    RISK_LEVEL_CRITICAL: _ClassVar[RiskLevel]

class ConditionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONDITION_STATUS_UNSPECIFIED: _ClassVar[ConditionStatus]
    CONDITION_STATUS_OK: _ClassVar[ConditionStatus]
    CONDITION_STATUS_TRIGGERED: _ClassVar[ConditionStatus]
    CONDITION_STATUS_CRITICAL: _ClassVar[ConditionStatus]
    CONDITION_STATUS_INCONCLUSIVE: _ClassVar[ConditionStatus]

class TestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TEST_STATUS_UNSPECIFIED: _ClassVar[TestStatus]
    TEST_STATUS_RUNNING: _ClassVar[TestStatus]
    TEST_STATUS_REDUCED: _ClassVar[TestStatus]
    TEST_STATUS_ROLLED_BACK: _ClassVar[TestStatus]
ACTION_UNSPECIFIED: Action
ACTION_CONTINUE: Action
ACTION_INCREASE_MONITORING: Action
ACTION_REDUCE_ROLLOUT: Action
ACTION_ROLLBACK: Action
ACTION_IMMEDIATE_ROLLBACK: Action
RISK_LEVEL_UNSPECIFIED: RiskLevel
RISK_LEVEL_LOW: RiskLevel
RISK_LEVEL_MEDIUM: RiskLevel
RISK_LEVEL_HIGH: RiskLevel
RISK_LEVEL_CRITICAL: RiskLevel
CONDITION_STATUS_UNSPECIFIED: ConditionStatus
CONDITION_STATUS_OK: ConditionStatus
CONDITION_STATUS_TRIGGERED: ConditionStatus
CONDITION_STATUS_CRITICAL: ConditionStatus
CONDITION_STATUS_INCONCLUSIVE: ConditionStatus
TEST_STATUS_UNSPECIFIED: TestStatus
TEST_STATUS_RUNNING: TestStatus
TEST_STATUS_REDUCED: TestStatus
TEST_STATUS_ROLLED_BACK: TestStatus

class LatencyMs(_message.Message):
    __slots__ = ("bounds", "counts", "p50", "p95", "p99", "mean")
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    P50_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    bounds: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    p50: float
    p95: float
    p99: float
    mean: float
    def __init__(self, bounds: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., p50: _Optional[float] = ..., p95: _Optional[float] = ..., p99: _Optional[float] = ..., mean: _Optional[float] = ...) -> None: ...

class Errors(_message.Message):
    __slots__ = ("extraction", "serialization", "timeout", "cache")
    EXTRACTION_FIELD_NUMBER: _ClassVar[int]
    SERIALIZATION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    extraction: int
    serialization: int
    timeout: int
    cache: int
    def __init__(self, extraction: _Optional[int] = ..., serialization: _Optional[int] = ..., timeout: _Optional[int] = ..., cache: _Optional[int] = ...) -> None: ...

class Retries(_message.Message):
    __slots__ = ("attempted", "failed")
    ATTEMPTED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    attempted: int
    failed: int
    def __init__(self, attempted: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class CacheTier(_message.Message):
    __slots__ = ("hits", "misses")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    hits: int
    misses: int
    def __init__(self, hits: _Optional[int] = ..., misses: _Optional[int] = ...) -> None: ...

class Cache(_message.Message):
    __slots__ = ("l1", "l2", "l3", "l4", "evictions", "entries", "response_time_ms")
    L1_FIELD_NUMBER: _ClassVar[int]
    L2_FIELD_NUMBER: _ClassVar[int]
    L3_FIELD_NUMBER: _ClassVar[int]
    L4_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    l1: CacheTier
    l2: CacheTier
    l3: CacheTier
    l4: CacheTier
    evictions: int
    entries: int
    response_time_ms: float
    def __init__(self, l1: _Optional[_Union[CacheTier, _Mapping]] = ..., l2: _Optional[_Union[CacheTier, _Mapping]] = ..., l3: _Optional[_Union[CacheTier, _Mapping]] = ..., l4: _Optional[_Union[CacheTier, _Mapping]] = ..., evictions: _Optional[int] = ..., entries: _Optional[int] = ..., response_time_ms: _Optional[float] = ...) -> None: ...

class ArmMetrics(_message.Message):
    __slots__ = ("requests", "labeled", "correct", "latency_ms", "confidence_histogram", "errors", "retries", "cache", "concurrent_requests", "queue_depth", "cpu_utilization", "memory_utilization", "duplicate_entity_rate")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LABELED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_ENTITY_RATE_FIELD_NUMBER: _ClassVar[int]
    requests: int
    labeled: int
    correct: int
    latency_ms: LatencyMs
    confidence_histogram: _containers.RepeatedScalarFieldContainer[int]
    errors: Errors
    retries: Retries
    cache: Cache
    concurrent_requests: int
    queue_depth: int
    cpu_utilization: float
    memory_utilization: float
    duplicate_entity_rate: float
    def __init__(self, requests: _Optional[int] = ..., labeled: _Optional[int] = ..., correct: _Optional[int] = ..., latency_ms: _Optional[_Union[LatencyMs, _Mapping]] = ..., confidence_histogram: _Optional[_Iterable[int]] = ..., errors: _Optional[_Union[Errors, _Mapping]] = ..., retries: _Optional[_Union[Retries, _Mapping]] = ..., cache: _Optional[_Union[Cache, _Mapping]] = ..., concurrent_requests: _Optional[int] = ..., queue_depth: _Optional[int] = ..., cpu_utilization: _Optional[float] = ..., memory_utilization: _Optional[float] = ..., duplicate_entity_rate: _Optional[float] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("test_id", "timestamp", "interval_seconds", "rollout_percent", "champion", "challenger")
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    test_id: str
    timestamp: str
    interval_seconds: float
    rollout_percent: float
    champion: ArmMetrics
    challenger: ArmMetrics
    def __init__(self, test_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., interval_seconds: _Optional[float] = ..., rollout_percent: _Optional[float] = ..., champion: _Optional[_Union[ArmMetrics, _Mapping]] = ..., challenger: _Optional[_Union[ArmMetrics, _Mapping]] = ...) -> None: ...

class Indicator(_message.Message):
    __slots__ = ("name", "severity", "critical", "counting", "held_seconds", "for_seconds", "observed", "threshold", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    COUNTING_FIELD_NUMBER: _ClassVar[int]
    HELD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FOR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    severity: float
    critical: bool
    counting: bool
    held_seconds: float
    for_seconds: float
    observed: float
    threshold: float
    detail: str
    def __init__(self, name: _Optional[str] = ..., severity: _Optional[float] = ..., critical: _Optional[bool] = ..., counting: _Optional[bool] = ..., held_seconds: _Optional[float] = ..., for_seconds: _Optional[float] = ..., observed: _Optional[float] = ..., threshold: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("name", "status", "severity", "weight", "contribution", "samples", "min_samples", "indicators")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    INDICATORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: ConditionStatus
    severity: float
    weight: float
    contribution: float
    samples: float
    min_samples: int
    indicators: _containers.RepeatedCompositeFieldContainer[Indicator]
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[ConditionStatus, str]] = ..., severity: _Optional[float] = ..., weight: _Optional[float] = ..., contribution: _Optional[float] = ..., samples: _Optional[float] = ..., min_samples: _Optional[int] = ..., indicators: _Optional[_Iterable[_Union[Indicator, _Mapping]]] = ...) -> None: ...

class NamedAction(_message.Message):
    __slots__ = ("name", "params", "condition")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _struct_pb2.Struct
    condition: str
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., condition: _Optional[str] = ...) -> None: ...

class PolicyRef(_message.Message):
    __slots__ = ("name", "version", "digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    digest: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decision_id", "test_id", "timestamp", "action", "confidence", "reason", "triggered_by", "risk_score", "risk_level", "conditions", "target_rollout_percent", "actions", "enforced", "policy", "test_status")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRIGGERED_BY_FIELD_NUMBER: _ClassVar[int]
    RISK_SCORE_FIELD_NUMBER: _ClassVar[int]
    RISK_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ROLLOUT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ENFORCED_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TEST_STATUS_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    test_id: str
    timestamp: str
    action: Action
    confidence: float
    reason: str
    triggered_by: str
    risk_score: float
    risk_level: RiskLevel
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    target_rollout_percent: float
    actions: _containers.RepeatedCompositeFieldContainer[NamedAction]
    enforced: bool
    policy: PolicyRef
    test_status: TestStatus
    def __init__(self, decision_id: _Optional[str] = ..., test_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., confidence: _Optional[float] = ..., reason: _Optional[str] = ..., triggered_by: _Optional[str] = ..., risk_score: _Optional[float] = ..., risk_level: _Optional[_Union[RiskLevel, str]] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., target_rollout_percent: _Optional[float] = ..., actions: _Optional[_Iterable[_Union[NamedAction, _Mapping]]] = ..., enforced: _Optional[bool] = ..., policy: _Optional[_Union[PolicyRef, _Mapping]] = ..., test_status: _Optional[_Union[TestStatus, str]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("decision_id", "test_id", "timestamp", "action", "confidence", "reason", "triggered_by", "risk_score", "risk_level", "conditions", "target_rollout_percent", "actions", "enforced", "policy", "test_status")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRIGGERED_BY_FIELD_NUMBER: _ClassVar[int]
    RISK_SCORE_FIELD_NUMBER: _ClassVar[int]
    RISK_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ROLLOUT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ENFORCED_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TEST_STATUS_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    test_id: str
    timestamp: str
    action: Action
    confidence: float
    reason: str
    triggered_by: str
    risk_score: float
    risk_level: RiskLevel
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    target_rollout_percent: float
    actions: _containers.RepeatedCompositeFieldContainer[NamedAction]
    enforced: bool
    policy: PolicyRef
    test_status: TestStatus
    def __init__(self, decision_id: _Optional[str] = ..., test_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., confidence: _Optional[float] = ..., reason: _Optional[str] = ..., triggered_by: _Optional[str] = ..., risk_score: _Optional[float] = ..., risk_level: _Optional[_Union[RiskLevel, str]] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., target_rollout_percent: _Optional[float] = ..., actions: _Optional[_Iterable[_Union[NamedAction, _Mapping]]] = ..., enforced: _Optional[bool] = ..., policy: _Optional[_Union[PolicyRef, _Mapping]] = ..., test_status: _Optional[_Union[TestStatus, str]] = ...) -> None: ...

class GetTestRequest(_message.Message):
    __slots__ = ("test_id",)
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    test_id: str
    def __init__(self, test_id: _Optional[str] = ...) -> None: ...

class GetTestResponse(_message.Message):
    __slots__ = ("test_id", "test_status", "target_rollout_percent", "last_decision", "policy", "rolled_back_at", "decisions")
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_STATUS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ROLLOUT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    LAST_DECISION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_AT_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    test_id: str
    test_status: TestStatus
    target_rollout_percent: float
    last_decision: Decision
    policy: PolicyRef
    rolled_back_at: str
    decisions: int
    def __init__(self, test_id: _Optional[str] = ..., test_status: _Optional[_Union[TestStatus, str]] = ..., target_rollout_percent: _Optional[float] = ..., last_decision: _Optional[_Union[Decision, _Mapping]] = ..., policy: _Optional[_Union[PolicyRef, _Mapping]] = ..., rolled_back_at: _Optional[str] = ..., decisions: _Optional[int] = ...) -> None: ...

class RestartTestRequest(_message.Message):
    __slots__ = ("test_id", "reason")
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    test_id: str
    reason: str
    def __init__(self, test_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RestartTestResponse(_message.Message):
    __slots__ = ("test_id", "test_status", "restarted_at")
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_STATUS_FIELD_NUMBER: _ClassVar[int]
    RESTARTED_AT_FIELD_NUMBER: _ClassVar[int]
    test_id: str
    test_status: TestStatus
    restarted_at: str
    def __init__(self, test_id: _Optional[str] = ..., test_status: _Optional[_Union[TestStatus, str]] = ..., restarted_at: _Optional[str] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("test_id", "page_size", "page_token")
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    test_id: str
    page_size: int
    page_token: str
    def __init__(self, test_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchDecisionsRequest(_message.Message):
    __slots__ = ("test_ids", "actions")
    TEST_IDS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    test_ids: _containers.RepeatedScalarFieldContainer[str]
    actions: _containers.RepeatedScalarFieldContainer[Action]
    def __init__(self, test_ids: _Optional[_Iterable[str]] = ..., actions: _Optional[_Iterable[_Union[Action, str]]] = ...) -> None: ...
