"""Building the core's config dataclasses from YAML / ROS parameter mappings, in one place.

Every config class validates its own values (raising ValueError naming the field); this module
only maps plain data onto the dataclass and rejects unknown keys, so a typo in a config file is an
error that names the key, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_dict(cls: type[T], values: Any, section: str) -> T:
    """``cls(**values)`` with unknown keys rejected; YAML lists become tuples for tuple fields."""
    if not isinstance(values, dict):
        raise ValueError(f"{section}: expected a mapping of fields, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{section}: unknown field(s) {', '.join(unknown)}")
    kwargs = {}
    for name, value in values.items():
        is_tuple = "tuple" in str(fields[name].type)
        kwargs[name] = tuple(value) if is_tuple and isinstance(value, list) else value
    return cls(**kwargs)


def build_nested_configs(config: Any, **classes: type) -> None:
    """In a config's ``__post_init__``: replace each named field that holds a mapping (read from
    YAML or a checkpoint's config.json) by its config class, with unknown keys rejected."""
    for name, cls in classes.items():
        value = getattr(config, name)
        if isinstance(value, dict):
            setattr(config, name, config_from_dict(cls, value, name))


def read_params_section(path: str | Path, node_name: str, prefix: str) -> dict[str, Any]:
    """The ``prefix`` mapping of a ROS 2 params file (``<node_name>: ros__parameters: <prefix>:``),
    or the whole file when it is a plain mapping of fields."""
    import yaml

    with open(path, encoding="utf-8") as stream:
        data = yaml.safe_load(stream) or {}
    if isinstance(data, dict) and isinstance(data.get(node_name), dict):
        return data[node_name].get("ros__parameters", {}).get(prefix, {})
    return data
