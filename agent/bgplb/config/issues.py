"""Config problems as ``(field path, reason)`` and their conversion from pydantic errors."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
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
    """Drop discriminated-union tags (``checks.0.http.port`` -> ``checks.0.port``).

    Walks ``loc`` along the model's annotations; a string met where the type is a union of
    models is a tag, not a field.
    """
    out: list[int | str] = []
    tp: Any = root
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
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            field = tp.model_fields.get(part)
            tp = field.annotation if field is not None else None
        elif typing.get_origin(tp) in (tuple, list) and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            tp = None
    return tuple(out)


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
        issues.append(ConfigIssue(join_path(loc, prefix), _message(err)))
    return issues
