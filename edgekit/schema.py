"""Check a mapping from YAML against a frozen dataclass's type hints, with did-you-mean errors."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any, Literal, TypeVar

from edgekit.errors import UserError

T = TypeVar("T")


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(str(word), [str(choice) for choice in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Instantiate dataclass `cls` from `values`, checking every key and type.

    A field's `metadata` may hold `range=(low, high)` (inclusive) for numbers.
    `where` names the place for messages, e.g. "recipe int8.yaml, step 2 (quantize-static)".
    """
    if values is not None and not isinstance(values, dict):
        raise UserError(f"{where}: expected a mapping of parameters, got {type(values).__name__}")
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = _hints(cls)
    for key in values:
        if key not in fields:
            raise UserError(
                f"{where}: unknown parameter '{key}'{did_you_mean(key, fields)}; "
                f"known: {', '.join(fields) or 'none'}"
            )
    missing = [name for name, f in fields.items() if name not in values and _required(f)]
    if missing:
        raise UserError(f"{where}: missing parameter(s) {', '.join(missing)}")
    checked = {}
    for key, value in values.items():
        checked[key] = _coerce(value, hints[key], f"{where}: parameter '{key}'")
        bounds = fields[key].metadata.get("range")
        if bounds and checked[key] is not None and not (bounds[0] <= checked[key] <= bounds[1]):
            raise UserError(f"{where}: parameter '{key}' = {value} is outside [{bounds[0]}, {bounds[1]}]")
    return cls(**checked)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types, resolved once (resolving costs more than checking a record: a manifest holds many)."""
    return typing.get_type_hints(cls)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            return _fail(where, value, f"a mapping ({hint.__name__})")
        return build(hint, value, where)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            return _fail(where, value, f"one of {choices}" + did_you_mean(str(value), map(str, args)))
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # an optional value: the one type's own message (with its did-you-mean)
            return _coerce(value, options[0], where)
        for option in options:
            try:
                return _coerce(value, option, where)
            except UserError:
                continue
        return _fail(where, value, " or ".join(_type_name(a) for a in args))
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return _fail(where, value, f"a list of {_type_name(args[0]) if args else 'values'}")
        item_hint = args[0] if args else Any
        items = [_coerce(item, item_hint, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            return _fail(where, value, "a mapping")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            return _fail(where, value, "true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return _fail(where, value, "an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _fail(where, value, "a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            return _fail(where, value, "a string")
        return value
    raise TypeError(f"{where}: unsupported type hint {hint!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _fail(where: str, value: Any, expected: str) -> Any:
    raise UserError(f"{where} = {value!r} ({type(value).__name__}); expected {expected}")


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain data for manifests and cache keys (tuples become lists, nested configs dicts)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_dict(value)
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def json_schema(cls: type, title: str | None = None) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of dataclass `cls` and the dataclasses it holds, from the same type hints that
    `build` checks against: what is published for other tools to validate against."""
    definitions: dict[str, Any] = {}
    root = _schema_of(cls, definitions)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title or cls.__name__,
            **definitions.pop(cls.__name__), "$defs": definitions} if "$ref" in root else root


def _schema_of(hint: Any, definitions: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        name = hint.__name__
        if name not in definitions:
            definitions[name] = {}  # placeholder: a recursive reference stops here
            hints = typing.get_type_hints(hint)
            fields = dataclasses.fields(hint)
            definitions[name] = {
                "type": "object", "additionalProperties": False,
                **({"description": hint.__doc__.strip().splitlines()[0]} if hint.__doc__ else {}),
                "properties": {f.name: _schema_of(hints[f.name], definitions) for f in fields},
                "required": [f.name for f in fields if _required(f)],
            }
        return {"$ref": f"#/$defs/{name}"}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_of(a, definitions) for a in args]}
    if origin in (tuple, list):
        return {"type": "array", "items": _schema_of(args[0], definitions) if args else {}}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1], definitions) if args else {}}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    if hint in simple:
        return {"type": simple[hint]}
    if hint is Any:
        return {}
    raise TypeError(f"no JSON Schema for type hint {hint!r}")
