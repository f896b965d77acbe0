"""The versions a node reports (status ``node.version``/``node.image_version``,
``bgplb_build_info``): the agent's own and the appliance image's.

The image's version is ``IMAGE_VERSION`` in ``/etc/os-release`` (what mkosi's
``ImageVersion=`` writes there); ``""`` when the file or the key is absent (a package install,
a developer's checkout)."""

from __future__ import annotations

import importlib.metadata
import shlex
from pathlib import Path

OS_RELEASE = Path("/etc/os-release")


def image_version(path: Path = OS_RELEASE) -> str:
    """``IMAGE_VERSION`` from an os-release file; ``""`` when absent or unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "IMAGE_VERSION":
            try:
                words = shlex.split(value)
            except ValueError:
                return value.strip()
            return words[0] if words else ""
    return ""


def exabgp_version() -> str:
    """The installed ExaBGP's version (``bgplb_build_info``); ``""`` when not installed."""
    try:
        return importlib.metadata.version("exabgp")
    except importlib.metadata.PackageNotFoundError:
        return ""
