"""Value serializers. A serializer is any class with ``dumps(value)`` and ``loads(data)``.

It is named by dotted path in ``OPTIONS["SERIALIZER"]`` and built with
``OPTIONS["SERIALIZER_OPTIONS"]`` as keyword arguments. Each stores plain ``int`` values raw,
as canonical decimal bytes (so ``INCR`` works), and reads back as an ``int`` only canonical
decimal bytes (``-?(0|[1-9][0-9]*)``, what Redis's ``INCR`` accepts: not ``b" 42 "`` nor
``b"1_000"``).

- ``PickleSerializer`` (default): anything picklable, Django's and django-redis's format. Reading
  a pickle runs code chosen by whoever wrote it: see ``SIGN_VALUES`` (README, Security).
- ``JSONSerializer``: ``dict`` (string keys), ``list``, ``str``, ``int``, ``float``, ``bool``,
  ``None``. Tuples read back as lists; bytes, sets, dates, ``Decimal`` are refused.
- ``OrjsonSerializer`` (``pip install hacache[orjson]``): the JSON serializer's types, each
  reading the other's output, written 7-10x and read 2-2.5x faster (``benchmarks/
  serializers.py``); but NaN and infinities are written as ``null``, integers beyond 64 bits
  are refused, ``uuid.UUID`` and ``Enum`` members are accepted (read back as their value), and
  some floats are written differently (``1e-7``, not ``1e-07``).
- ``MsgpackSerializer`` (``pip install hacache[msgpack]``): JSON's types plus ``bytes``; tuples
  read back as lists; integer dict keys are kept. Sets, dates, ``Decimal`` are refused.

Neither JSON nor msgpack can run code when read.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol


class Serializer(Protocol):
    def dumps(self, value: Any) -> bytes | int: ...

    def loads(self, data: bytes) -> Any: ...


def is_canonical_int(data: bytes) -> bool:
    """``-?(0|[1-9][0-9]*)``: the integers stored raw, and the only bytes read as one."""
    digits = data[1:] if data[:1] == b"-" else data
    return digits.isdigit() and (digits[:1] != b"0" or data == b"0")


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
        # skip the integer test for the common case.
        if data[:1] == b"\x80":
            return pickle.loads(data)
        if is_canonical_int(data):
            return int(data)
        return pickle.loads(data)  # protocols 0 and 1


class JSONSerializer:
    """Standard-library ``json``, compact and UTF-8 (``ensure_ascii`` off)."""

    def __init__(self, sort_keys: bool = False) -> None:
        self._encode = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys, allow_nan=True
        ).encode
        self._decode = json.JSONDecoder().decode

    def dumps(self, value: Any) -> bytes | int:
        if type(value) is int:
            return value
        return self._encode(value).encode()

    def loads(self, data: bytes) -> Any:
        return self._decode(data.decode())


class OrjsonSerializer:
    """``orjson``, set to store what ``JSONSerializer`` stores: non-string dict keys become
    strings, dates and dataclasses are refused (as stdlib ``json`` does). It cannot keep NaN
    (written as ``null``) nor integers beyond 64 bits (refused), it writes ``uuid.UUID`` and
    ``Enum`` members (stdlib refuses them) and formats some floats its own way: equal values,
    other bytes, so do not mix the two as writers of set members (found by their bytes)."""

    def __init__(self, sort_keys: bool = False) -> None:
        import orjson

        self._dumps, self._loads = orjson.dumps, orjson.loads
        self._options = (
            orjson.OPT_NON_STR_KEYS
            | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS
            | (orjson.OPT_SORT_KEYS if sort_keys else 0)
        )

    def dumps(self, value: Any) -> bytes | int:
        if type(value) is int:
            return value
        return self._dumps(value, None, self._options)

    def loads(self, data: bytes) -> Any:
        return self._loads(data)


class MsgpackSerializer:
    """``msgpack`` with bytes kept apart from str (``use_bin_type``)."""

    def __init__(self) -> None:
        import msgpack

        self._packb, self._unpackb = msgpack.packb, msgpack.unpackb

    def dumps(self, value: Any) -> bytes | int:
        if type(value) is int:
            return value
        return self._packb(value, use_bin_type=True)

    def loads(self, data: bytes) -> Any:
        # msgpack writes an int 48..57 as one byte "0".."9", but ints are never packed here.
        if is_canonical_int(data):
            return int(data)
        return self._unpackb(data, raw=False, strict_map_key=False)
