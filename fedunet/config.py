"""Run configuration: YAML in, checked against a JSON schema, defaults filled in.

Every error names the field and, where there is a closed set, the allowed values, and
is raised before anything is loaded or trained.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

KNOWN_TRAIN_SIZES = {"cifar10": 50000, "cifar100": 50000, "fashion-mnist": 60000}


class ConfigError(ValueError):
    """One or more invalid fields; the message lists each with what is allowed."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(self.problems))


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def schema() -> dict:
    """The run schema, with architectures and methods taken from their registries (do not mutate).

    Cached per set of registered names, so that a backbone or method registered later is allowed too."""
    from fedunet import methods, models
    from fedunet.segmodel import SEG_BACKBONES

    return _schema(tuple(models.available()) + SEG_BACKBONES, tuple(methods.available()))


@functools.lru_cache(maxsize=4)
def _schema(architectures: tuple[str, ...], method_names: tuple[str, ...]) -> dict:
    from fedunet import methods

    text = resources.files("fedunet.schemas").joinpath("run.schema.yaml").read_text()
    s = load_yaml(text)
    s["properties"]["method"]["enum"] = list(method_names)
    s["properties"]["model"]["properties"]["architectures"]["items"]["enum"] = list(architectures)
    # each method declares its own hyperparameters (with defaults) in its file
    s["properties"]["methods"] = {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": "hyperparameters of each method (only the selected method's are used)",
        "properties": {
            name: {"type": "object", "additionalProperties": False, "default": {}, "properties": methods.get(name).options}
            for name in method_names
        },
    }
    return s


def fill_defaults(instance: dict, sch: dict) -> dict:
    """Fill missing keys from the schema's defaults, recursively (objects only)."""
    for key, sub in sch.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            fill_defaults(instance[key], sub)
    return instance


def describe(error: jsonschema.ValidationError) -> str:
    """One schema error as ``field: what is wrong; what is allowed``."""
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(allowed)}"
    if v == "enum":
        allowed = ", ".join(str(x) for x in error.validator_value)
        return f"{path}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if v == "type":
        return f"{path}: expected {error.validator_value}, got {error.instance!r}"
    bounds = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
        "multipleOf": "a multiple of",
    }
    if v == "minItems":
        return f"{path}: must list at least {error.validator_value} item(s), got {error.instance!r}"
    if v in bounds:
        return f"{path}: {error.instance!r} must be {bounds[v]} {error.validator_value}"
    return f"{path}: {error.message}"


def validate(cfg: Any) -> dict:
    """Check ``cfg`` against the schema and the rules between fields; returns it with defaults."""
    if not isinstance(cfg, dict):
        raise ConfigError([f"(top level): expected a mapping of settings, got {type(cfg).__name__}"])
    from fedunet.segmentation import runconfig

    cfg = copy.deepcopy(cfg)
    sch = schema()
    runconfig.prefill(cfg)  # the defaults that follow the task (segmentation), before the schema's
    fill_defaults(cfg, sch)
    errors = sorted(jsonschema.Draft202012Validator(sch).iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(describe(e) for e in errors)
    _check_relations(cfg)
    return cfg


def _check_relations(cfg: dict) -> None:
    from fedunet import methods
    from fedunet.segmentation import runconfig

    problems = runconfig.problems(cfg)  # what the task (classification, segmentation) cannot do
    if problems:
        raise ConfigError(problems)
    part, ds = cfg["partition"], cfg["dataset"]
    size = KNOWN_TRAIN_SIZES[ds["name"]] if ds["name"] in KNOWN_TRAIN_SIZES else runconfig.source_train_size(cfg)
    if ds["max_train"] is not None:
        size = min(size, ds["max_train"])
    if part["num_clients"] * part["min_samples"] > size:
        problems.append(
            f"partition.num_clients: {part['num_clients']} clients x partition.min_samples "
            f"{part['min_samples']} exceeds the {size} training samples of {ds['name']}"
        )
    if cfg["eval"]["every"] > cfg["federated"]["rounds"]:
        problems.append(f"eval.every: {cfg['eval']['every']} is more than federated.rounds ({cfg['federated']['rounds']})")
    try:
        methods.get(cfg["method"]).check_config(cfg)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        raise ConfigError(problems)


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``3``, ``0.1``, ``[a, b]``, ``null``)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: expected key=value, e.g. federated.rounds=20"])
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError([f"--set {key}: {p!r} is not a section"])
            node = child
        node[parts[-1]] = load_yaml(raw)
    return cfg


def load(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    """Read a YAML config (or start from defaults), apply overrides, validate."""
    raw: Any = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError([f"config file {path} does not exist"])
        try:
            raw = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError([f"{path} is not valid YAML: {e}"]) from None
        if not isinstance(raw, dict):
            raise ConfigError([f"{path}: expected a mapping of settings at the top level"])
    return validate(apply_overrides(raw, overrides))
