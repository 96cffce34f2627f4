"""How a setting is declared: once, with its default, type, range, help text and widget hint.

Validation, the dashboard's forms, the command line's flags and the sweep axes all read these
declarations, so a range or a default is never typed a second time. Plain Python: no TensorFlow.

    epochs: int = setting(10, "Passes over the training images.", min=1, max=500)
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Setting:
    """One setting of a run or of an architecture."""

    name: str
    default: object                # int | float | str | bool | list[int] | None
    help: str
    label: str = ""                # the form's label; from the name when empty
    kind: type | None = None       # int | float | str | bool | list (of whole numbers)
    choices: tuple = ()            # the only values a str (or int) setting takes
    min: float | None = None       # for lists: a bound on every element
    max: float | None = None
    off: object = None             # a value outside the range that turns the feature off (0 = none)
    optional: bool = False         # None is allowed (and means `help` says what)
    # widget hints, read by the forms only
    step: float | None = None
    format: str | None = None
    options: tuple = ()            # a number offered as a short list (any value in range is valid)
    slider: bool = False

    def __post_init__(self):
        if self.kind is None:  # architecture parameters: the type of the default
            object.__setattr__(self, "kind", list if isinstance(self.default, list) else type(self.default))

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def expected(self) -> str:
        """What this setting takes, in words: 'a whole number between 1 and 500'."""
        if self.choices:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            text = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
                    list: "a list of whole numbers"}[self.kind]
            if self.min is not None and self.max is not None:
                text += f" between {_number(self.min)} and {_number(self.max)}"
            elif self.min is not None:
                text += f" of at least {_number(self.min)}"
            elif self.max is not None:
                text += f" of at most {_number(self.max)}"
        if self.off is not None:
            text = f"{self.off!r} (off) or {text}"
        if self.optional:
            text = f"empty (None) or {text}"
        return text

    def check(self, value):
        """`value` as this setting's type, or ValueError saying what was expected and what came."""
        if value is None and self.optional:
            return None
        if self.off is not None and _same(value, self.off):
            return self.off
        try:
            value = _as_kind(self.kind, value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be {self.expected()}; got {value!r}") from None
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be {self.expected()}; got {value!r}")
        for item in value if isinstance(value, list) else [value]:
            if (self.min is not None and item < self.min) or (self.max is not None and item > self.max):
                raise ValueError(f"{self.name} must be {self.expected()}; got {value!r}")
        return value


def _number(bound: float) -> str:
    return f"{int(bound):,}" if float(bound).is_integer() else f"{bound:g}"


def _same(value, off) -> bool:
    return type(value) is not bool and isinstance(value, (int, float, np.number)) and value == off


def _as_kind(kind: type, value):
    """Accept exact types (and NumPy scalars, and whole floats for ints); refuse strings for numbers."""
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise TypeError
    if kind is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if kind is list:
        if isinstance(value, str):  # "256, 128" from a text box
            value = value.replace(",", " ").split()
            return [int(v) for v in value]
        if isinstance(value, (list, tuple)):
            return [_as_kind(int, v) for v in value]
        raise TypeError
    if isinstance(value, (bool, np.bool_, str)) or not isinstance(value, (int, float, np.number)):
        raise TypeError
    if kind is int:
        if float(value) != int(value):
            raise ValueError
        return int(value)
    return float(value)


def setting(default, help: str, **declaration):
    """A dataclass field declared as a setting; `declared(cls)` gives its Setting."""
    metadata = {"setting": (default, help, declaration)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def declared(cls) -> dict[str, Setting]:
    """name -> Setting for every field of dataclass `cls` declared with `setting()`; the type
    comes from the field's annotation."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        if "setting" not in f.metadata:
            continue
        default, help, declaration = f.metadata["setting"]
        kind, optional = _kind_of(hints[f.name])
        found[f.name] = Setting(f.name, default, help, kind=kind, optional=optional, **declaration)
    return found


def _kind_of(hint) -> tuple[type, bool]:
    """int -> (int, False); float | None -> (float, True); list[int] -> (list, False)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional:
        hint = args[0]
    origin = typing.get_origin(hint)
    return (list if origin is list or hint is list else hint), optional


def check_all(instance, prefix: str = "") -> None:
    """Raise ValueError for the first declared setting of `instance` that is wrong (its message
    starts with `prefix` + the name); values of the right kind are stored as that kind (1 -> 1.0)."""
    for name, spec in declared(type(instance)).items():
        try:
            setattr(instance, name, spec.check(getattr(instance, name)))
        except ValueError as exc:
            raise ValueError(prefix + str(exc)) from None
