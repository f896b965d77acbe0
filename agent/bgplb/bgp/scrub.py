"""ExaBGP's output as we log it: MD5 keys hidden in every form it can print, known harmless
advice dropped.

What ExaBGP 5.0.15 can print of a key (its source: configuration/neighbor, bgp/neighbor.py,
reactor/network/tcp.py, util/psk.py): we write the key base64-encoded (``md5-base64 true``),
so the form it holds and prints is the **base64** text: in a syntax error (``line N:
md5-password <b64> ;``), in its neighbor dump (``md5-password "<b64>";``, e.g. inside "the
route family ... is not configured on neighbor ...") and in its debug parse log. The key
itself appears only if something decodes and prints it: a Python repr (``'..'`` or
``b'..'`` with escapes), JSON (``\\u`` escapes) or hex. So every line is cleaned of, per key:
the key as is; base64 with and without padding; its str and bytes repr escapes; its JSON
escape; lower and upper hex; each line of a key that holds a line break. Whatever follows
``md5-password`` on a line is hidden as well, whatever its form.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

HIDDEN = "<md5 secret>"


def forms(secret: str) -> set[str]:
    """Every spelling of ``secret`` ExaBGP's output could contain."""
    raw = secret.encode()
    b64 = base64.b64encode(raw).decode("ascii")
    out = {
        secret,
        b64,
        b64.rstrip("="),
        repr(secret)[1:-1],
        repr(raw)[2:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        raw.hex(),
        raw.hex().upper(),
    }
    out.update(part for part in secret.splitlines() if len(part) >= 4)
    return {f for f in out if f}


class Scrubber:
    """Knows every key of every config installed so far (a reload may print old blocks)."""

    def __init__(self) -> None:
        self._forms: list[str] = []

    def add(self, secrets: Iterable[str]) -> None:
        known = set(self._forms)
        for secret in secrets:
            if secret:
                known |= forms(secret)
        self._forms = sorted(known, key=len, reverse=True)  # longest first: no partial leftovers

    def scrub(self, text: str) -> str:
        if "environment file missing" in text or "exabgp env >" in text:
            return ""
        for form in self._forms:
            if form in text:
                text = text.replace(form, HIDDEN)
        if "md5-password" in text:
            return text.split("md5-password", 1)[0] + "md5-password <hidden>"
        return text
