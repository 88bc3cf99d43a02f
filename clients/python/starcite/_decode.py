"""Builds the generated dataclasses from decoded JSON.

Keys the gateway adds later are ignored, so an older SDK keeps reading a newer gateway; a
required key that is missing is a `StarciteError`, never a half-built value.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar

from .errors import StarciteError

T = TypeVar("T")


def decode(cls: type[T], data: Any) -> T:
    """`data` (a JSON object) as an instance of the dataclass `cls`."""
    return typing.cast(T, _value(cls, data))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value(hint: Any, data: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any or data is None:
        return data
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        return _value(options[0], data) if len(options) == 1 else data
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_value(item, element) for element in _expect(list, data)]
    if origin is dict:
        return _expect(dict, data)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            return data
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        fields = _expect(dict, data)
        hints = _hints(hint)
        known = {
            field.name: _value(hints[field.name], fields[field.name])
            for field in dataclasses.fields(hint)
            if field.name in fields
        }
        try:
            return hint(**known)
        except TypeError as err:
            raise StarciteError(
                "unexpected_reply", 0, f"the gateway's {hint.__name__} is incomplete: {err}"
            ) from err
    return data


def _expect(kind: type, data: Any) -> Any:
    if not isinstance(data, kind):
        raise StarciteError("unexpected_reply", 0, f"expected a JSON {kind.__name__}, got {data!r}")
    return data
