"""Configuration dataclasses to and from JSON records, so a run folder's config.json rebuilds its run exactly."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def to_record(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) configuration dataclass; tuples become lists."""
    return dataclasses.asdict(config)


def from_record(cls: type[T], record: Mapping[str, Any]) -> T:
    """The dataclass `cls` from a record written by `to_record`; nested dataclasses and tuples are restored.

    Keys missing from the record keep their defaults (older run folders); unknown keys are an error. A class whose
    settings were renamed gives a static `upgrade_record(record) -> record` that maps older records to its fields.
    """
    upgrade = getattr(cls, "upgrade_record", None)
    if upgrade is not None:
        record = upgrade(record)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(record) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
    return cls(**{key: _restore(hints[key], value) for key, value in record.items()})


def renamed(record: Mapping[str, Any], old: str, new: str, convert: Any = None) -> dict[str, Any]:
    """`record` with the setting `old` (of an older record) as `new`, its value passed through `convert` if given;
    as it was where it has no `old`."""
    record = dict(record)
    if old in record:
        value = record.pop(old)
        record[new] = value if convert is None else convert(value)
    return record


def older_valid_sizes(
    record: Mapping[str, Any], axes_of: Mapping[str, tuple[int, ...]], default_zyx: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """`record` with older per-axis valid-size settings (each name -> the zyx axes it set) merged into
    `valid_sizes_zyx`: over the record's own `valid_sizes_zyx` where it has one (a change given under an old name),
    else over `default_zyx`."""
    older = {name: record[name] for name in axes_of if name in record}
    if not older:
        return dict(record)
    upgraded = {key: value for key, value in record.items() if key not in axes_of}
    sizes = list(record.get("valid_sizes_zyx", default_zyx))
    for name, value in older.items():
        for axis in axes_of[name]:
            sizes[axis] = value
    upgraded["valid_sizes_zyx"] = sizes
    return upgraded


def _restore(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    candidates = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for candidate in candidates:
        if dataclasses.is_dataclass(candidate) and isinstance(value, Mapping):
            return from_record(candidate, value)  # type: ignore[arg-type]
        if typing.get_origin(candidate) is tuple and isinstance(value, list):
            return _to_tuple(value)
    return value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def with_changes(config: T, changes: Mapping[str, Any]) -> T:
    """`config` with the settings named in `changes` (a partial record, nested like `to_record`'s) replaced.

    Unnamed settings keep `config`'s values, also inside nested dataclasses; unknown keys are an error.
    """
    return from_record(type(config), _merged(to_record(config), changes))


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        nested = isinstance(value, Mapping) and isinstance(base.get(key), Mapping)
        merged[key] = _merged(base[key], value) if nested else value
    return merged
