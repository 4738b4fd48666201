"""The typed configuration of one CT training run: reading, overriding and validating it.

One schema (:mod:`ct_core.schema`, whose names this module re-exports), validated once, used by
``ct train``, the sweep trainables and every YAML under ``configs/``. Fields are addressed by
dotted paths (``generator.tau``); :func:`apply_overrides` turns ``--set generator.tau=0.9``
strings into nested updates. Every invalid value raises a :class:`ConfigError` whose messages
name the field and what is allowed, e.g. ``generator.tau: must be in (0, 1), got 1.5``.
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ct_core.schema import (
    Config,
    DataConfig,
    EvaluationConfig,
    GeneratorConfig,
    ModelConfig,
    TrainConfig,
    flatten,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "GeneratorConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "flatten",
    "format_errors",
    "load_config",
    "parse_config",
    "parse_override",
]


class ConfigError(ValueError):
    """Invalid configuration. ``messages`` holds one line per problem, each naming its field."""

    def __init__(self, messages: Sequence[str] | str):
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("\n".join(self.messages))


# ----------------------------------------------------------------------------------------------
# Parsing, overrides and error messages


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    cur: Any = model
    for part in loc[:-1]:
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return None
        f = cur.model_fields.get(str(part))
        if f is None:
            return None
        cur = f.annotation
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return list(cur.model_fields)
    return None


def format_errors(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per field of a failed validation of model ``root`` (the ct config, or a
    sweep file's), naming the field and what is allowed."""
    msgs: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # drop union-branch tags pydantic adds (e.g. 'int', 'str', 'list[float]')
        path_parts: list[str] = []
        for p in loc:
            if isinstance(p, int):
                path_parts.append(f"[{p}]")
            elif p in {
                "int",
                "str",
                "float",
                "list[float]",
                "list[list[float]]",
                "literal['inferred','none']",
                "dict[str,any]",
            }:
                continue
            elif p.startswith(("literal[", "list[", "function-", "union[")):
                continue
            else:
                path_parts.append(("." if path_parts else "") + p)
        path = "".join(path_parts)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            # messages from model validators already name their field
            named = (
                f"{path.split('.')[0]}.",
                "data.",
                "model.",
                "train.",
                "generator.",
                "feature ",
            )
            if not path or msg.startswith(named):
                msgs.append(msg)
                continue
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(root, [p for p in loc if isinstance(p, str)])
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            msgs.append(f"{path}: unknown key{hint}")
            continue
        if err["type"] == "missing":
            msgs.append(f"{path}: required")
            continue
        msg = msg.replace("Input should be", "must be")
        got = err.get("input")
        got_s = f", got {got!r}" if not isinstance(got, Mapping) else ""
        msgs.append(f"{path}: {msg}{got_s}" if path else f"{msg}{got_s}")
    # de-duplicate union noise while keeping order: one line per field (a value that fits no
    # branch of a union fails each branch)
    seen: set[str] = set()
    out = []
    for m in msgs:
        field = m.split(":", 1)[0] if ": " in m else m
        field = re.sub(r"\[\d+\]", "", field)  # one line for a list's bad items too
        if field not in seen:
            seen.add(field)
            out.append(m)
    return out


def parse_config(raw: Mapping[str, Any] | None) -> Config:
    """Validate a nested dict into a :class:`Config` (raises :class:`ConfigError`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Config.model_validate(dict(raw))
    except ValidationError as e:
        raise ConfigError(format_errors(e, Config)) from None


MAX_ALIASES = 100
"""YAML aliases (``*name``) one document may use: enough for shared blocks, too few for an
alias bomb (a few lines that expand to gigabytes)."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (YAML would keep the last silently) and
    more than :data:`MAX_ALIASES` aliases."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"more than {MAX_ALIASES} aliases (*name); write the values out",
                    mark,
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it below
                dup = False
            if dup:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (each key may appear once)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


MAX_NODES = 1_000_000
"""Values a document may hold once its aliases are expanded (what validation walks)."""


def _expanded_size(obj: Any, memo: dict[int, int]) -> int:
    """Values in ``obj`` with shared parts counted each time they appear (memoised per object,
    so a few aliases that expand to billions cost microseconds)."""
    if not isinstance(obj, (list, dict)):
        return 1
    key = id(obj)
    if key not in memo:
        memo[key] = 0  # a cycle (a recursive alias) counts once
        items = obj.values() if isinstance(obj, dict) else obj
        memo[key] = min(1 + sum(_expanded_size(v, memo) for v in items), MAX_NODES + 1)
    return memo[key]


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with :class:`StrictLoader`; a document that expands to more than
    :data:`MAX_NODES` values is refused too (raises ``yaml.YAMLError``)."""
    loader = StrictLoader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    if loader.aliases and _expanded_size(data, {}) > MAX_NODES:
        raise yaml.YAMLError(
            f"the aliases (*name) expand to more than {MAX_NODES} values; write the values out"
        )
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``"generator.tau=0.9"`` -> ``("generator.tau", 0.9)`` (values parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"--set expects dotted.path=value, got {item!r}")
    key, _, val = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects dotted.path=value, got {item!r}")
    try:
        value = safe_load(val) if val.strip() else None
    except yaml.YAMLError as e:
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {key}: cannot parse value {val!r}: {why}") from None
    return key, value


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"{key}: {p!r} is a value, not a section")
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(
    raw: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any] | None
) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-path overrides applied (strings ``k=v`` or a dict)."""
    out = copy.deepcopy(dict(raw))
    if not overrides:
        return out
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    for k, v in items:
        set_dotted(out, k, v)
    return out


def read_yaml(path: str | Path, what: str = "config") -> Any:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} file not found: {p}")
    if not p.is_file():
        raise ConfigError(f"{what} path is not a file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {p} is not UTF-8 text (is it a YAML file?)") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} file {p}: {e.strerror}") from None
    try:
        return safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None


def resolve_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make a relative ``data.path`` absolute against the config file's folder."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        p = Path(data["path"]).expanduser()
        if not p.is_absolute():
            data["path"] = str((base_dir / p).resolve())
    return raw


def load_raw(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a training YAML (with an optional ``base:`` file it extends) into a plain dict; a
    chain of ``base:`` files that comes back to one of its files is an error."""
    p = Path(path)
    key = p.resolve()
    if key in _chain:
        loop = " -> ".join(str(q) for q in (*_chain, key))
        raise ConfigError(f"base: {p} extends itself ({loop}); a base chain must end")
    if len(_chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"base: more than {MAX_BASE_DEPTH} nested base files at {p}")
    raw = read_yaml(p)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a config must be a mapping of sections, got {type(raw).__name__}")
    raw = resolve_paths(raw, p.parent)
    base = raw.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{p}: base must be a path to a training config, got {base!r}")
        parent = load_raw(p.parent / base, (*_chain, key))
        raw = deep_merge(parent, raw)
    return raw


MAX_BASE_DEPTH = 20


def deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(a))
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(
    path_or_dict: str | Path | Mapping[str, Any],
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
) -> Config:
    """Load (a YAML file, or a nested dict of sections), override (``"generator.tau=0.9"``
    strings or a dotted-path dict) and validate a training config (raises :class:`ConfigError`)."""
    if isinstance(path_or_dict, Mapping):
        return parse_config(apply_overrides(path_or_dict, overrides))
    return parse_config(apply_overrides(load_raw(path_or_dict), overrides))


def import_object(path: str) -> Any:
    """The object ``"package.module:attribute"`` names (``model.factory``, ``generator.type``)."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from ct_core.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
