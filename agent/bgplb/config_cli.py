"""``bgp-lb check-config`` and ``bgp-lb print-config``: exit 0 when the config is good, 2 when not.

Errors go to stderr one per line as ``<field path>: <reason>``; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, TextIO

import yaml

from .config import ConfigError, ParsedConfig, load

EXIT_OK = 0
EXIT_BAD_CONFIG = 2
REDACTED = "<redacted>"
_SECRET = re.compile(r"password|token|secret|passphrase|private_key|api_key", re.IGNORECASE)


def run_config_command(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        parsed = load(args.config)
    except ConfigError as e:
        report_errors(e, err)
        return EXIT_BAD_CONFIG
    except Exception as e:  # defensive: a bad file must never produce a traceback
        print(f"{args.config}: cannot load the config: {type(e).__name__}: {e}", file=err)
        return EXIT_BAD_CONFIG
    if args.command == "check-config":
        for note in parsed.notes:
            print(f"note: {note}", file=out)
        c = parsed.config
        print(f"OK: {_count(len(c.services), 'service')}, {_count(len(c.peers), 'peer')}", file=out)
        return EXIT_OK
    fmt = getattr(args, "format", "yaml")
    out.write(render(parsed, effective=bool(getattr(args, "effective", False)), fmt=fmt))
    if fmt == "json":
        for note in parsed.notes:
            print(f"note: {note}", file=err)
    return EXIT_OK


def report_errors(error: ConfigError, stream: TextIO) -> None:
    """One line per problem: ``services[1].vips[0]: 10.0.0.1/24 is not a host address``."""
    for issue in error.errors:
        print(str(issue), file=stream)


def render(parsed: ParsedConfig, effective: bool, fmt: str = "yaml") -> str:
    """The config as YAML or JSON: every default when ``effective``, else only what was set."""
    data = redact(parsed.config.model_dump(mode="json", exclude_unset=not effective))
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    header = ""
    if parsed.format == "seed":
        header = "# converted from the original bgp-lb (seed) JSON format\n"
        header += "".join(f"# note: {n}\n" for n in parsed.notes)
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def redact(data: Any) -> Any:
    """Replace the value of every key that looks like a secret (file paths are kept)."""
    if isinstance(data, dict):
        return {
            k: REDACTED
            if isinstance(k, str)
            and _SECRET.search(k)
            and not k.endswith("_file")
            and v is not None
            else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
