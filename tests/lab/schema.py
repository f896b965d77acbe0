"""The subset of containerlab's topology schema that our ``*.clab.yml`` files use.

Every model forbids unknown keys: a key the lab runner would silently ignore (and so not
reproduce) is an error instead. Values here are raw; :mod:`tests.lab.topology` gives them
meaning (roles, binds, exec lines, links).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ROLE_LABEL = "bgplb-lab.role"
Role = Literal["router", "lb", "client", "server", "switch"]
SysctlValue = int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Labels(_Strict):
    role: Role = Field(alias=ROLE_LABEL)


class KindDefaults(_Strict):
    """``topology.kinds.linux``: values every node of the kind inherits."""

    image: str | None = None
    binds: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    sysctls: dict[str, SysctlValue] = Field(default_factory=dict)


class NodeDef(_Strict):
    kind: Literal["linux"]
    image: str | None = None
    labels: Labels
    binds: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    sysctls: dict[str, SysctlValue] = Field(default_factory=dict)
    exec_: tuple[str, ...] = Field(default=(), alias="exec")
    cmd: str | None = None


class LinkDef(_Strict):
    endpoints: tuple[str, str]


class TopologyDef(_Strict):
    kinds: dict[Literal["linux"], KindDefaults] = Field(default_factory=dict)
    nodes: dict[str, NodeDef] = Field(min_length=1)
    links: tuple[LinkDef, ...] = ()


class LabDef(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,15}$")
    topology: TopologyDef


def allowed_keys(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The keys the model at ``loc`` (the parent of a rejected key) accepts."""
    model: type[_Strict]
    if not loc:
        model = LabDef
    elif loc == ("topology",):
        model = TopologyDef
    elif loc[:2] == ("topology", "kinds") and len(loc) == 3:
        model = KindDefaults
    elif loc[:2] == ("topology", "nodes") and len(loc) == 3:
        model = NodeDef
    elif loc[:2] == ("topology", "nodes") and loc[3:] == ("labels",):
        model = Labels
    elif loc[:2] == ("topology", "links") and len(loc) == 3:
        model = LinkDef
    else:
        return ()
    return tuple(f.alias or name for name, f in model.model_fields.items())
