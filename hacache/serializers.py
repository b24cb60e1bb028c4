"""Value serializers. A serializer is any class with ``dumps(value)`` and ``loads(data)``.

It is named by dotted path in ``OPTIONS["SERIALIZER"]`` and built with
``OPTIONS["SERIALIZER_OPTIONS"]`` as keyword arguments.
"""

from __future__ import annotations

import pickle
from typing import Any, Protocol


class Serializer(Protocol):
    def dumps(self, value: Any) -> bytes | int: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """Django RedisCache's format: plain ints stay raw so ``INCR`` works, the rest is pickled.

    The two formats stay interchangeable with Django's RedisCache and django-redis's defaults.
    """

    def __init__(self, protocol: int | None = None) -> None:
        if protocol is None:
            protocol = pickle.HIGHEST_PROTOCOL
        if not isinstance(protocol, int) or not 0 <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(f"pickle protocol must be an int from 0 to {pickle.HIGHEST_PROTOCOL}")
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes | int:
        # bool is an int subclass but must round-trip as bool, so test the exact type.
        if type(value) is int:
            return value
        return pickle.dumps(value, self.protocol)

    def loads(self, data: bytes) -> Any:
        # Pickle protocol 2+ always starts with the PROTO opcode, which no integer does:
        # skip the int() attempt, and its exception, for the common case.
        if data[:1] == b"\x80":
            return pickle.loads(data)
        try:
            return int(data)
        except ValueError:
            return pickle.loads(data)
