"""Reading, decoding and validating a config file. Every problem becomes a ``ConfigIssue``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from .crosschecks import check_config
from .issues import ConfigError, ConfigIssue, issues_from_validation, join_path
from .schema import Config
from .seed import convert_seed, is_seed_format, seed_issue

MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ParsedConfig:
    """A config with how it was written: ``data`` is the native layout before defaults."""

    config: Config
    format: Literal["native", "seed"]
    data: Any
    notes: tuple[str, ...] = ()


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: construct_mapping reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def decode(text: str, name: str, json_only: bool = False) -> object:
    """YAML (or JSON) text to plain data; syntax errors become ``<name>: line N: ...``."""
    if json_only:
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs)
        except _DuplicateKey as e:
            raise ConfigError([ConfigIssue(name, f"duplicate key {e.args[0]!r}")]) from None
        except RecursionError:
            raise ConfigError([ConfigIssue(name, "nested too deeply")]) from None
        except json.JSONDecodeError as e:
            raise ConfigError(
                [ConfigIssue(name, f"line {e.lineno}: {e.msg} (column {e.colno})")]
            ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise ConfigError([ConfigIssue(name, f"{line}{what}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([ConfigIssue(name, f"not valid YAML: {e}")]) from None
    except RecursionError:
        raise ConfigError([ConfigIssue(name, "nested too deeply")]) from None


def read_config_data(path: str | Path) -> object:
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([ConfigIssue(str(path), f"cannot read: {why}")]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([ConfigIssue(str(path), f"larger than {MAX_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigIssue(str(path), f"not UTF-8 text (byte {e.start})")]) from None
    return decode(text, str(path), json_only=path.suffix.lower() == ".json")


def _lone_surrogate(data: object) -> ConfigIssue | None:
    """A string that is not valid Unicode: YAML's ``"\\ud800"`` escape (or JSON's) decodes to
    a lone surrogate, which nothing downstream can encode. Iterative, so any depth is fine;
    each container once, so YAML aliases (even one inside itself: ``&a [*a]``) are too."""
    stack: list[tuple[tuple[int | str, ...], object]] = [((), data)]
    seen: set[int] = set()
    while stack:
        path, node = stack.pop()
        items: list[tuple[int | str, object]] = []
        if isinstance(node, dict | list):
            if id(node) in seen:
                continue
            seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and not _encodable(key):
                    return ConfigIssue(join_path(path), f"key {key!r} is not valid Unicode text")
                items.append((key if isinstance(key, str | int) else repr(key), value))
        elif isinstance(node, list):
            items = list(enumerate(node))
        elif isinstance(node, str) and not _encodable(node):
            return ConfigIssue(join_path(path), f"{node!r} is not valid Unicode text")
        stack.extend(((*path, k), v) for k, v in reversed(items))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse(data: object) -> ParsedConfig:
    """Validate decoded data (native or seed layout) into a :class:`ParsedConfig`."""
    bad = _lone_surrogate(data)
    if bad is not None:
        raise ConfigError([bad])
    if data is None:
        raise ConfigError([ConfigIssue("", "the config is empty")])
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigIssue(
                    "", f"the top level must be a mapping of keys, not a {type(data).__name__}"
                )
            ]
        )
    if is_seed_format(data):
        native, notes, issues = convert_seed(data)
        if not native or any("IPv4-only" in i.message for i in issues):
            raise ConfigError(issues)  # the converted config would only add confusing errors
        try:
            config = _validate(native)
        except ConfigError as e:
            raise ConfigError(issues + [seed_issue(i) for i in e.errors]) from None
        if issues:
            raise ConfigError(issues)
        return ParsedConfig(config, "seed", native, tuple(notes))
    return ParsedConfig(_validate(data), "native", data)


def _validate(data: dict[Any, Any]) -> Config:
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(issues_from_validation(e, Config)) from None
    except (RecursionError, ValueError) as e:  # pragma: no cover - defensive: never a traceback
        raise ConfigError([ConfigIssue("", f"cannot validate: {e}")]) from None
    issues = check_config(config)
    if issues:
        raise ConfigError(issues)
    return config


def parse_config(data: object) -> Config:
    """Already-decoded YAML/JSON to a validated config (detects the seed format). Pure."""
    return parse(data).config


def load(path: str | Path) -> ParsedConfig:
    """Read and validate a file, then check the files it names exist (runtime problems)."""
    parsed = parse(read_config_data(path))
    issues = check_files(parsed.config)
    if issues:
        raise ConfigError(issues)
    return parsed


def load_config(path: str | Path) -> Config:
    return load(path).config


def check_files(config: Config) -> list[ConfigIssue]:
    """Secret files the config names must be readable, non-empty regular files. Not the
    API token file: a bad one only disables the mutating API (bgplb.api.ApiToken)."""
    wanted: list[tuple[str, Path | None]] = [
        (f"peers[{i}].md5_password_file", p.md5_password_file) for i, p in enumerate(config.peers)
    ]
    issues = []
    for field, file in wanted:
        if file is None:
            continue
        try:
            with file.open("rb") as f:
                empty = not f.read(1)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            issues.append(ConfigIssue(field, f"{file}: cannot read: {why}"))
            continue
        if empty:
            issues.append(ConfigIssue(field, f"{file}: the file is empty"))
    return issues
