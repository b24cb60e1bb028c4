"""Parsers for one ``OPTIONS`` value each, as ``options.SCHEMA`` lists them.

Each takes ``(name, value)`` and returns the value parsed, or raises ``ImproperlyConfigured``
naming ``OPTIONS['<name>']`` and what was expected. A parser looks at its own value only (rules
between options are ``options``'s) and never mutates it: a dict is copied into a read-only one.
``bool`` is never taken for a number, and a number of seconds is finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from django.utils.module_loading import import_string

from hacache.locations import fail as _fail


def _seconds(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _number_of_seconds(name: str, value: Any, positive: bool) -> float:
    """A number out of range (or any float: NaN, infinity) is a timeout error, E004; E001 else."""
    if not _seconds(value) or value < 0 or (positive and value == 0):
        expected = (
            "finite, positive number of seconds" if positive else "finite number of seconds >= 0"
        )
        raise _fail(
            f"OPTIONS['{name}']",
            f"expected a {expected}, got {value!r}",
            "E004" if _seconds(value) or isinstance(value, float) else None,
        )
    return float(value)


def positive_seconds(name: str, value: Any) -> float:
    return _number_of_seconds(name, value, positive=True)


def seconds_or_zero(name: str, value: Any) -> float:
    return _number_of_seconds(name, value, positive=False)


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(f"OPTIONS['{name}']", f"expected a positive integer, got {value!r}")
    return value


def optional_positive_int(name: str, value: Any) -> int | None:
    return None if value is None else positive_int(name, value)


def count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(f"OPTIONS['{name}']", f"expected an integer >= 0, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"OPTIONS['{name}']", f"expected True or False, got {value!r}")
    return value


def optional_boolean(name: str, value: Any) -> bool | None:
    return None if value is None else boolean(name, value)


def str_dict(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail(f"OPTIONS['{name}']", f"expected a dict with string keys, got {value!r}")
    return MappingProxyType(dict(value))


def choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        if value not in choices:
            expected = " or ".join(repr(c) for c in choices)
            raise _fail(f"OPTIONS['{name}']", f"expected {expected}, got {value!r}")
        return value

    return parse


def non_empty_string(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(f"OPTIONS['{name}']", f"expected a non-empty string, got {value!r}")
    return value


def globs(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _fail(f"OPTIONS['{name}']", f"expected a list of glob patterns, got {value!r}")
    return tuple(value)


def tracking(name: str, value: Any) -> tuple[str, ...] | None:
    """False: off; True: every key; a list of Redis key prefixes (e.g. ["site:"])."""
    if value is False:
        return None
    if value is True:
        return ()
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise _fail(
            f"OPTIONS['{name}']", f"expected True, False or a list of key prefixes, got {value!r}"
        )
    return tuple(value)


def dotted_path(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return import_string(value)
    except ImportError as exc:
        raise _fail(f"OPTIONS['{name}']", f"cannot import {value!r}: {exc}") from exc


def function(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise _fail(f"OPTIONS['{name}']", f"expected a function or its dotted path, got {value!r}")
    return value


def stampede(name: str, value: Any) -> Any:
    from hacache.stampede import parse_option  # imported late: it builds on the router

    return parse_option(name, value)
