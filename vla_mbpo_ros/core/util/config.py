"""The one typed loader for the package's config dataclasses (YAML files, ROS parameters, checkpoints).

Every config is a dataclass that validates its own values in ``__post_init__`` (a ValueError naming
the field). ``load_config`` maps plain data onto it, driven by the field annotations:

* unknown keys are an error naming ``section.key``, so a typo is never a silently ignored setting;
* nested config dataclasses are built from mappings, recursively, with the same rules;
* lists become tuples for tuple fields, and integers are accepted where a float is declared (YAML
  users write ``3`` for ``3.0``); any other type mismatch is an error naming the field and the type.

Why not draccus (LeRobot's config library, installed with it): it parses into dataclasses too, but
it is built around command lines and its own choice registries, it does not accept our ROS 2
parameter files (``<node>: ros__parameters:``), and its errors name Python types, not the YAML path
a user has to fix. This loader is ~100 lines and does exactly what our configs need.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check(value: Any, annotation: Any, where: str) -> Any:
    """``value`` converted to ``annotation`` where that is unambiguous; ValueError naming ``where``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _check(value, option, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {options}")
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        return load_config(annotation, value, where)
    if annotation in _SCALARS:
        if annotation is float and type(value) is int:
            return float(value)
        if type(value) is not annotation and not (annotation is float and isinstance(value, float)):
            raise ValueError(f"{where}: expected {_SCALARS[annotation]}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))) if args else tuple(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin in (dict, Mapping, typing.Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value  # numpy arrays, protocols, ...: the dataclass validates them itself


def load_config(cls: type[T], values: Any, section: str = "") -> T:
    """``cls`` built from the mapping ``values`` (see the module docstring); errors name
    ``section.field`` (``field`` without a section). Missing keys take the dataclass defaults."""
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{section or cls.__name__}: expected a mapping of fields, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{section or cls.__name__}: unknown field(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _check(value, hints.get(name, Any), f"{section}.{name}" if section else name) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:  # the dataclass's own validation: say where the value came from
        if not section or str(err).startswith(section):
            raise
        raise ValueError(f"{section}: {err}") from None


def build_nested_configs(config: Any, **classes: type) -> None:
    """In a config's ``__post_init__``: replace each named field that holds a mapping (a config
    built directly from JSON or YAML data) by its config class, loaded with ``load_config``."""
    for name, cls in classes.items():
        value = getattr(config, name)
        if isinstance(value, Mapping):
            setattr(config, name, load_config(cls, value, name))


def read_params(path: str | Path, node_name: str | None = None, prefix: str | None = None) -> dict[str, Any]:
    """The mapping of a YAML file. For a ROS 2 params file (``<node_name>: ros__parameters:``) the
    node's parameters, or their ``prefix`` section; any other file is returned whole."""
    import yaml

    with open(path, encoding="utf-8") as stream:
        data = yaml.safe_load(stream) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if node_name is not None and isinstance(data.get(node_name), Mapping):
        data = data[node_name].get("ros__parameters", {})
        if prefix is not None:
            data = data.get(prefix, {})
    return dict(data)


def load_config_file(cls: type[T], path: str | Path, node_name: str | None = None, prefix: str | None = None) -> T:
    """``cls`` from a YAML file (see ``read_params``); errors name the file and the field."""
    return load_config(cls, read_params(path, node_name, prefix), section=f"{path}: {prefix or cls.__name__}")
