"""Config problems as ``(field path, reason)`` and their conversion from pydantic errors."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails


@dataclass(frozen=True, order=True)
class ConfigIssue:
    """One problem: ``path`` like ``services[1].vips[0]`` (empty = the whole file)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The config is unusable; ``errors`` holds every problem found."""

    def __init__(self, errors: Sequence[ConfigIssue]) -> None:
        self.errors: list[ConfigIssue] = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


Loc = tuple[int | str, ...]


def join_path(loc: Iterable[int | str], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to the interesting type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _union_members(tp: Any) -> list[type[BaseModel]]:
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return []
    return [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]


def _tag_of(model: type[BaseModel]) -> tuple[str, ...]:
    field = model.model_fields.get("type")
    if field is None:
        return ()
    return tuple(str(a) for a in typing.get_args(field.annotation))


def strip_tags(loc: Loc, root: type[BaseModel]) -> Loc:
    """Drop discriminated-union tags (``checks.0.http.port`` -> ``checks.0.port``)."""
    return _walk(loc, root)[0]


def _walk(loc: Loc, root: type[BaseModel]) -> tuple[Loc, type[BaseModel] | None]:
    """Walk ``loc`` along the model's annotations: the loc without union tags (a string met
    where the type is a union of models is a tag, not a field), and the model that holds
    the last key (``None`` when the last part is not a model's key)."""
    out: list[int | str] = []
    tp: Any = root
    owner: type[BaseModel] | None = None
    for part in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        if members and isinstance(part, str):
            match = [m for m in members if part in _tag_of(m)]
            if match:
                tp = match[0]
                continue
            tp = None
        out.append(part)
        owner = None
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            owner = tp
            field = _field(tp, part)
            tp = field.annotation if field is not None else None
        elif typing.get_origin(tp) in (tuple, list) and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            tp = None
    return tuple(out), owner


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    if key in model.model_fields:
        return model.model_fields[key]
    return next((f for f in model.model_fields.values() if f.alias == key), None)


def _unknown_key(key: object, model: type[BaseModel] | None) -> str:
    if model is None:
        return "unknown key"
    keys = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected one of: {', '.join(keys)})"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = err["msg"].removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        return f"unknown type '{ctx.get('tag')}' (expected one of {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        return "required key is missing"
    if kind.startswith(
        ("int_", "float_", "bool_", "string_", "greater", "less", "literal_", "enum")
    ) or (
        kind
        in (
            "too_short",
            "too_long",
            "tuple_type",
            "dict_type",
            "model_type",
            "model_attributes_type",
        )
    ):
        return f"{msg} (got {_short(err.get('input'))})"
    return str(msg)


def issues_from_validation(
    error: ValidationError, root: type[BaseModel], prefix: str = ""
) -> list[ConfigIssue]:
    errors = error.errors(include_url=False)
    locs = [strip_tags(tuple(e["loc"]), root) for e in errors]
    issues = []
    for err, loc in zip(errors, locs, strict=True):
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in locs):
            continue  # "needs at least 1 item" only because an item below it was invalid
        ctx = err.get("ctx") or {}
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, str(ctx.get("discriminator", "type")).strip("'"))
        message = _message(err)
        if err["type"] == "extra_forbidden" and loc:
            message = _unknown_key(loc[-1], _walk(tuple(err["loc"]), root)[1])
        issues.append(ConfigIssue(join_path(loc, prefix), message))
    return issues
