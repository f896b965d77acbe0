"""The base of every config model: frozen, unknown keys rejected, no control characters in text;
and the name patterns several sections share."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
CHECK_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUL = re.compile(r"\x00")
SCHEDULERS = frozenset(
    {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos"}
)


def check_ifname(v: str) -> str:
    """A Linux interface name (IFNAMSIZ 16 with the NUL), for every section that names one."""
    if not IFNAME_RE.match(v):
        raise PydanticCustomError(
            "ifname",
            "'{value}' is not a valid Linux interface name "
            "(1-15 characters: letters, digits, '_', '-', '.')",
            {"value": v},
        )
    return v


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, v: object, info: ValidationInfo) -> object:
        """No text field may carry NUL or line breaks: they end up in HTTP headers, ExaBGP's
        config and file paths, where they fail late or inject. An exec check's argv and env
        go to execve() unquoted: only NUL is refused there."""
        pattern = _NUL if info.field_name in ("argv", "env") else _CONTROL
        values: list[object] = [v]
        if isinstance(v, tuple):
            values = list(v)
        elif isinstance(v, dict):
            values = [*v.keys(), *v.values()]
        for item in values:
            if isinstance(item, str | Path) and pattern.search(str(item)):
                what = (
                    "a NUL character"
                    if pattern is _NUL
                    else "a control character (NUL, newline, ...)"
                )
                raise PydanticCustomError("control_character", "contains {what}", {"what": what})
        return v
