"""``GET /api/v1/status`` as JSON text, built and serialised without holding the event loop.

At 1,000 services the document is ~0.5 MB: building it was 0.1-0.25 s and serialising it
(one ``model_dump_json`` call, which holds the GIL, so a thread does not help) 15-60 ms, in one
go on the loop (bench/RESULTS.md, "Event loop lag"). Here both run in steps: the services
are built one by one (``status_view.status_steps``), then serialised a few at a time and
spliced into the rest of the document; the loop gets a turn every ~2 ms
(``cooperative.run_cooperatively``). The text is the same as ``model_dump_json()``'s.
"""

from __future__ import annotations

from .cooperative import Steps, run_cooperatively
from .status import StatusResponse
from .status_view import StatusSource, status_steps

MARK = '"services":[]'
CHUNK = 20  # services serialised between two yields


async def status_json(agent: StatusSource) -> str:
    """The agent's status document, as ``build_status(agent).model_dump_json()`` gives it."""
    status = await run_cooperatively(status_steps(agent))
    return await run_cooperatively(json_steps(status))


def json_steps(status: StatusResponse) -> Steps[str]:
    """``status.model_dump_json()``, yielding every ``CHUNK`` services."""
    head = status.model_copy(update={"services": []}).model_dump_json()
    if head.count(MARK) != 1:  # pragma: no cover - only a service-free document has none
        return status.model_dump_json()
    parts: list[str] = []
    for i, service in enumerate(status.services):
        if i % CHUNK == 0:
            yield
        parts.append(service.model_dump_json())
    before, after = head.split(MARK)
    return f'{before}"services":[{",".join(parts)}]{after}'
