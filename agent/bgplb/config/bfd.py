"""``peers[].bfd``: BFD for one peer (docs/bgp.md#bfd), run by FRR's bfdd next to ExaBGP."""

from __future__ import annotations

from pydantic import Field

from .base import Strict


class BfdConfig(Strict):
    """The intervals this node asks for (transmit = receive = ``interval_ms``) and the
    detection multiplier. Detection time = the slower side's interval x multiplier: the
    router's ``bfd profile`` must match (docs/bgp.md). The ranges are bfdd's own."""

    interval_ms: int = Field(default=300, ge=10, le=60000)
    multiplier: int = Field(default=3, ge=2, le=255)

    @property
    def detection_ms(self) -> int:
        return self.interval_ms * self.multiplier
