"""ExaBGP's output as we log it: MD5 keys hidden, known harmless advice dropped."""

from __future__ import annotations

from collections.abc import Iterable


class Scrubber:
    """Knows every key of every config installed so far (a reload may print old blocks)."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s)

    def scrub(self, text: str) -> str:
        if "environment file missing" in text or "exabgp env >" in text:
            return ""
        for secret in self._secrets:
            text = text.replace(secret, "<md5 secret>")
        if "md5-password" in text:
            return text.split("md5-password", 1)[0] + "md5-password <hidden>"
        return text
