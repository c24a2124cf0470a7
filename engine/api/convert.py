"""Protobuf <-> the JSON-shaped dicts of the contracts, by field name, driven by the descriptors.

Nothing here lists a field: a field added to the proto and to engine/contract is carried.
Presence is kept both ways: an unset optional field is absent (`present`) or None (`to_dict`); enums
travel as the contract's lowercase words (`reduce_rollout` <-> ACTION_REDUCE_ROLLOUT).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name


def to_dict(message: Message) -> dict[str, Any]:
    """Every field of a message as contract data; an unset optional field is None."""
    return _reader(message.DESCRIPTOR)(message)  # type: ignore[arg-type]  # upb's Descriptor


def present(message: Any) -> dict[str, Any]:
    """Only what the sender set (snapshots: absent stays absent), from protobuf's own list of
    present fields: the hot path of Evaluate."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        convert = _PRESENT.get(field.full_name)
        if convert is None:
            convert = _PRESENT[field.full_name] = _present_field(field)
        out[field.name] = convert(value)
    return out


_PRESENT: dict[str, Callable[[Any], Any]] = {}


def _present_field(field: FieldDescriptor) -> Callable[[Any], Any]:
    if field.message_type is not None and field.message_type.full_name == _STRUCT:
        return lambda value: _plain(dict(value))
    if field.message_type is not None:
        if _repeated(field):
            return lambda values: [present(item) for item in values]
        return present
    if field.enum_type is not None:
        enum = field.enum_type
        if _repeated(field):
            return lambda values: [enum_word(enum, n) for n in values]
        return lambda number: enum_word(enum, number)
    if _repeated(field):
        return list
    return _same


def _same(value: Any) -> Any:
    return value


def fill(message: Message, data: Mapping[str, Any]) -> Message:
    """Write contract data into `message` (fields it does not have are an error: the contracts agree)."""
    _writer(message.DESCRIPTOR)(message, data)  # type: ignore[arg-type]  # upb's Descriptor
    return message


def enum_number(enum: EnumDescriptor, word: str) -> int:
    """The proto enum number of a contract word: (Action, "reduce_rollout") -> ACTION_REDUCE_ROLLOUT."""
    return int(enum.values_by_name[_prefix(enum) + str(word).upper()].number)


def enum_word(enum: EnumDescriptor, number: int) -> str:
    return str(enum.values_by_number[number].name).removeprefix(_prefix(enum)).lower()


# --- readers --------------------------------------------------------------------------------
_READERS: dict[str, Callable[[Any], dict[str, Any]]] = {}


def _reader(descriptor: Descriptor) -> Callable[[Any], dict[str, Any]]:
    found = _READERS.get(descriptor.full_name)
    if found is None:
        plan = [(f.name, _read_field(f)) for f in descriptor.fields]

        def read(message: Any) -> dict[str, Any]:
            return {name: get(message) for name, get in plan}

        found = _READERS[descriptor.full_name] = read
    return found


def _read_field(field: FieldDescriptor) -> Callable[[Any], Any]:
    name = field.name
    if field.message_type is not None and field.message_type.full_name == _STRUCT:
        return lambda m: _plain(dict(getattr(m, name))) if m.HasField(name) else None
    if field.message_type is not None:
        inner = _reader(field.message_type)
        if _repeated(field):
            return lambda m: [inner(item) for item in getattr(m, name)]
        return lambda m: inner(getattr(m, name)) if m.HasField(name) else None
    if field.enum_type is not None:
        enum = field.enum_type
        if _repeated(field):
            return lambda m: [enum_word(enum, n) for n in getattr(m, name)]
        return lambda m: enum_word(enum, getattr(m, name))
    if _repeated(field):
        return lambda m: list(getattr(m, name))
    if field.has_presence:
        return lambda m: getattr(m, name) if m.HasField(name) else None
    return lambda m: getattr(m, name)


# --- writers --------------------------------------------------------------------------------
_WRITERS: dict[str, Callable[[Any, Mapping[str, Any]], None]] = {}


def _writer(descriptor: Descriptor) -> Callable[[Any, Mapping[str, Any]], None]:
    found = _WRITERS.get(descriptor.full_name)
    if found is None:
        plan = {f.name: _write_field(f) for f in descriptor.fields}

        def write(message: Any, data: Mapping[str, Any]) -> None:
            for name, value in data.items():
                if value is not None:
                    plan[name](message, value)

        found = _WRITERS[descriptor.full_name] = write
    return found


def _write_field(field: FieldDescriptor) -> Callable[[Any, Any], None]:
    name = field.name
    if field.message_type is not None and field.message_type.full_name == _STRUCT:
        return lambda m, v: getattr(m, name).CopyFrom(_struct(v))
    if field.message_type is not None:
        inner = _writer(field.message_type)
        if _repeated(field):

            def add_all(m: Any, values: Any) -> None:
                items = getattr(m, name)
                for value in values:
                    inner(items.add(), value)

            return add_all
        return lambda m, v: inner(getattr(m, name), v)
    if field.enum_type is not None:
        enum = field.enum_type
        if _repeated(field):
            return lambda m, v: getattr(m, name).extend(enum_number(enum, w) for w in v)
        return lambda m, v: setattr(m, name, enum_number(enum, v))
    if _repeated(field):
        return lambda m, v: getattr(m, name).extend(v)
    return lambda m, v: setattr(m, name, v)


_STRUCTS: dict[tuple[tuple[str, Any], ...], struct_pb2.Struct] = {}


def _struct(params: Mapping[str, Any]) -> struct_pb2.Struct:
    """Action parameters come from the policy, so the few distinct ones are built once."""
    key = tuple(sorted(params.items()))
    found = _STRUCTS.get(key)
    if found is None:
        found = struct_pb2.Struct()
        found.update(dict(params))
        if len(_STRUCTS) < 4096:
            _STRUCTS[key] = found
    return found


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Struct numbers come back as floats; whole ones read better as ints."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in params.items()}


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


_PREFIXES: dict[str, str] = {}


def _prefix(enum: EnumDescriptor) -> str:
    """ACTION_ for Action, RISK_LEVEL_ for RiskLevel: the proto style guide's enum value prefix."""
    found = _PREFIXES.get(enum.full_name)
    if found is None:
        found = _PREFIXES[enum.full_name] = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return found
