"""The value format: how a serialized value is signed and compressed for Redis, and read back.

With ``SIGN_VALUES`` and ``COMPRESSOR`` off (the default) a value is stored exactly as the
serializer made it, as Django's RedisCache stores it: canonical decimal integers raw (so
``INCR`` works) and everything else pickled (first byte ``0x80``). Otherwise a value that is
signed or compressed is *framed*::

    0xC1 | flags | body | tag

- ``0xC1`` marks a frame. No serializer output starts with it: pickle starts with ``0x80`` (or
  an ASCII opcode, protocols 0-1), a raw integer with a digit or ``-``, JSON with ASCII, and
  ``0xC1`` is the one byte msgpack never uses. Unframed values therefore still read back.
- ``flags``: bit 0 set if signed; bits 4-5 the compressor (1 zlib, 2 zstd, 3 lz4; 0 none).
- ``body``: the serializer's bytes, compressed if flagged.
- ``tag`` (signed only): HMAC-SHA256 (32 bytes) over ``len(context) | context | 0xC1 | flags
  | body`` (the length as 4 bytes; with an empty context, over the frame alone), with a key
  derived from ``SIGNING_KEY`` (default ``SECRET_KEY``); older keys verify too (rotation).

The *context* binds a signed value to where it is stored: a value's context is its Redis key
(a hash's value: the hash's key, a NUL byte and its field), so a value copied to another key
or field does not verify there (a cached session copied onto another session's key is
refused, not loaded). Set and sorted-set members have an empty context: Redis moves them
between keys itself (``SMOVE``, ``*STORE``).
Signing does not stop an older value of the same key from being written back (a replay).

Integers stay raw and unsigned even when signing, so counters keep working with ``INCR``. A
signing reader accepts an unframed value only if it is a canonical decimal integer
(``-?(0|[1-9][0-9]*)``, what Redis's ``INCR`` accepts) and reads it only as an ``int``: who
can write to Redis can change a number, never make us deserialize anything. A value that does
not verify is never decompressed nor deserialized: the caller reads it as a miss and warns.

Compression happens only at ``COMPRESS_MIN_BYTES`` and above, and only if it makes the value
smaller; it runs before signing, so a reader verifies before it decompresses. Decompression is
bounded by ``MAX_VALUE_BYTES``, the largest serialized value stored (a larger one raises
``ValueError`` naming the key before anything is sent), so there are no decompression bombs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hacache.locations import fail as _fail
from hacache.serializers import Serializer, is_canonical_int

logger = logging.getLogger("hacache.codec")

MAGIC = b"\xc1"
SIGNED = 0x01
_COMPRESSOR_BITS = 0x30
TAG_BYTES = 32
# Redis refuses a bulk string above 512 MB (proto-max-bulk-len): stay well below it.
DEFAULT_MAX_VALUE_BYTES = 256 * 1024 * 1024
_SALT = b"hacache.codec.value-signing"


class UnreadableValue(ValueError):
    """A stored value that does not verify, decompress or deserialize."""


class TooLarge(ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size:,} bytes serialized, above MAX_VALUE_BYTES ({limit:,})")
        self.size, self.limit = size, limit


def _zlib() -> tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]:
    def unzlib(body: bytes, limit: int) -> bytes:
        d = zlib.decompressobj()
        out = d.decompress(body, limit + 1)
        if len(out) > limit or not d.eof:
            raise UnreadableValue(f"zlib data expands beyond MAX_VALUE_BYTES ({limit:,})")
        return out

    return (lambda data: zlib.compress(data, 6)), unzlib


def _zstd() -> tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]:
    import zstandard

    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()

    def unzstd(body: bytes, limit: int) -> bytes:
        size = zstandard.frame_content_size(body)
        if size < 0 or size > limit:  # our frames always carry their size
            raise UnreadableValue(f"zstd frame of unknown size or beyond {limit:,} bytes")
        return dctx.decompress(body, max_output_size=limit)

    return cctx.compress, unzstd


def _lz4() -> tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]:
    import lz4.frame

    def unlz4(body: bytes, limit: int) -> bytes:
        d = lz4.frame.LZ4FrameDecompressor()
        out = d.decompress(body, max_length=limit + 1)
        if len(out) > limit or not d.eof:
            raise UnreadableValue(f"lz4 data expands beyond MAX_VALUE_BYTES ({limit:,})")
        return out

    return (lambda data: lz4.frame.compress(data, store_size=True)), unlz4


# name -> (id in the flags, factory, pip extra)
COMPRESSORS = {"zlib": (1, _zlib, None), "zstd": (2, _zstd, "zstd"), "lz4": (3, _lz4, "lz4")}
# How django-redis's compressors' (unmarked) output starts: zlib's header, zstd's and lz4's
# frame magic. Read only when not signing (unsigned data is trusted then, as pickle is).
_FOREIGN = (
    (b"\x78\x01", "zlib"),
    (b"\x78\x5e", "zlib"),
    (b"\x78\x9c", "zlib"),
    (b"\x78\xda", "zlib"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


def _decompressor(cid: int) -> Callable[[bytes, int], bytes]:
    for name, (known, factory, extra) in COMPRESSORS.items():
        if known == cid:
            try:
                return factory()[1]
            except ImportError:
                raise UnreadableValue(
                    f"compressed with {name}: pip install hacache[{extra}]"
                ) from None
    raise UnreadableValue(f"unknown compressor id {cid}")


def derive_key(secret: str | bytes) -> bytes:
    """The signing key made from a secret (as Django's ``salted_hmac`` does)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hmac.digest(secret, _SALT, "sha256")


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Hmac:
    """HMAC-SHA256 with one key, its padded states hashed once: each tag then costs two
    ``sha256.copy()`` instead of ``hmac.digest``'s per-call OpenSSL set-up (half the time for
    small values)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def __call__(self, data: bytes, context: bytes = b"") -> bytes:
        """The tag of ``data`` stored in ``context`` (see the module docstring)."""
        inner = self._inner.copy()
        if context:  # a frame starts with 0xC1, a length with 0x00: never the same input
            inner.update(len(context).to_bytes(4, "big"))
            inner.update(context)
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class Codec:
    """Turns a value into the bytes stored and back, signing and compressing as configured."""

    def __init__(
        self,
        serializer: Serializer,
        keys: tuple[bytes, ...] = (),
        compressor: str | None = None,
        min_bytes: int = 1024,
        max_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self.serializer = serializer
        self._sdumps, self._sloads = serializer.dumps, serializer.loads
        self.keys = keys  # current first; empty: not signing
        self._tags = tuple(Hmac(key) for key in keys)
        self.key = self._tags[0] if keys else None
        self.compressor = compressor
        self.min_bytes, self.max_bytes = min_bytes, max_bytes
        self._compress = None
        self._cid = 0
        if compressor is not None:
            self._cid, factory, _ = COMPRESSORS[compressor]
            self._compress = factory()[0]
        self._decompressors: dict[int, Callable[[bytes, int], bytes]] = {}

    def dumps(self, value: Any, context: bytes = b"") -> bytes | int:
        data = self._sdumps(value)
        if type(data) is int:
            return data
        if len(data) > self.max_bytes:  # before compression: what a reader may decompress
            raise TooLarge(len(data), self.max_bytes)
        flags = 0
        if self._compress is not None and len(data) >= self.min_bytes:
            packed = self._compress(data)
            if len(packed) < len(data):
                data, flags = packed, self._cid << 4
        if self.key is not None:
            framed = bytes((0xC1, flags | SIGNED)) + data
            return framed + self.key(framed, context)
        if flags:
            return bytes((0xC1, flags)) + data
        return data

    def loads(self, data: bytes, context: bytes = b"") -> Any:
        return self._sloads(self.open(data, context))

    def open(self, data: bytes, context: bytes = b"") -> bytes:
        """The serializer's bytes in a stored value, verified and decompressed: what the
        near-cache keeps, so a hit only deserializes. Raises ``UnreadableValue``."""
        if data[:1] != MAGIC:
            if self.key is not None:
                if is_canonical_int(data):
                    return data
                raise UnreadableValue("not signed (only canonical integers may be)")
            if self._compress is None or data[:1] == b"\x80":
                return data
            return foreign(data, self.max_bytes)
        flags = data[1] if len(data) > 1 else 0xFF
        if flags & ~(SIGNED | _COMPRESSOR_BITS):
            raise UnreadableValue(f"unknown format flags {flags:#04x}")
        if flags & SIGNED:
            end = len(data) - TAG_BYTES
            if end < 2 or (self.keys and not self._verify(data[:end], data[end:], context)):
                raise UnreadableValue("signature does not verify")
            body = data[2:end]
        elif self.key is not None:
            raise UnreadableValue("not signed")
        else:
            body = data[2:]
        cid = flags >> 4
        if cid:
            unpack = self._decompressors.get(cid)
            if unpack is None:
                unpack = self._decompressors[cid] = _decompressor(cid)
            body = unpack(body, self.max_bytes)
        return body

    def variants(self, value: Any) -> list[bytes | int]:
        """``value`` as each signing key signs it (no context), the current key's first: how
        a set member stored before a key rotation is still found by value."""
        first = self.dumps(value)
        if type(first) is int or first[:1] != MAGIC or not first[1] & SIGNED:
            return [first]
        framed = first[:-TAG_BYTES]
        return [first, *(framed + sign(framed) for sign in self._tags[1:])]

    def rebind(self, data: bytes, old: bytes, new: bytes) -> bytes:
        """A stored value moved from context ``old`` to ``new`` (``incr_version``): verified
        where it was, signed for where it goes, never deserialized. Raises ``UnreadableValue``."""
        self.open(data, old)
        if self.key is None or data[:1] != MAGIC:  # not signing, or a raw integer
            return data
        framed = data[:-TAG_BYTES]
        return framed + self.key(framed, new)

    def _verify(self, signed: bytes, tag: bytes, context: bytes) -> bool:
        if hmac.compare_digest(self._tags[0](signed, context), tag):  # the current key
            return True
        return any(hmac.compare_digest(sign(signed, context), tag) for sign in self._tags[1:])


def foreign(data: bytes, limit: int) -> bytes:
    """Unmarked data as django-redis's compressors leave it, decompressed; else as it is."""
    for magic, name in _FOREIGN:
        if data.startswith(magic) and len(data) > len(magic):
            try:
                return _decompressor(COMPRESSORS[name][0])(data, limit)
            except (UnreadableValue, zlib.error, RuntimeError, ValueError):
                return data  # not compressed after all: the serializer's to judge
    return data


def recognized(data: bytes) -> bool:
    """A frame, or django-redis's compressed data: worth a second reading by ``lenient``."""
    return data[:1] == MAGIC or any(data.startswith(magic) for magic, _ in _FOREIGN)


def lenient(serializer: Serializer, max_bytes: int) -> Codec:
    """A codec that reads every frame without verifying: for a cache that does not sign (so
    trusts Redis), reading values written by one that signs or compresses."""
    return Codec(serializer, (), "zlib", 1 << 62, max_bytes)


@dataclass(frozen=True)
class ValueOptions:
    """``SIGN_VALUES``, ``COMPRESSOR``, ``MAX_VALUE_BYTES``, ``UNREADABLE_VALUES``, parsed."""

    max_bytes: int
    raise_unreadable: bool
    codec: Codec | None  # None: stored as the serializer makes them, read the fast way
    # Without a codec: reads what the serializer could not (frames, django-redis compression).
    fallback: Codec | None


def parse_secret(name: str, value: Any) -> Any:
    if value is None or (isinstance(value, (str, bytes)) and value):
        return value
    raise _fail(f"OPTIONS['{name}']", f"expected a non-empty string or bytes, got {value!r}")


def parse_secrets(name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _fail(f"OPTIONS['{name}']", f"expected a list of keys, got {value!r}")
    return tuple(parse_secret(name, v) for v in value)


def parse_compressor(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in COMPRESSORS:
        raise _fail(f"OPTIONS['{name}']", f"expected None, 'zlib', 'zstd' or 'lz4', got {value!r}")
    try:
        COMPRESSORS[value][1]()
    except ImportError as exc:
        extra = COMPRESSORS[value][2]
        raise _fail(f"OPTIONS['{name}']", f"{exc}: pip install hacache[{extra}]") from exc
    return value


def value_options(values: Mapping[str, Any], serializer: Serializer) -> ValueOptions:
    keys: tuple[bytes, ...] = ()
    if values["SIGN_VALUES"]:
        secrets = [values["SIGNING_KEY"], *values["SIGNING_FALLBACK_KEYS"]]
        if secrets[0] is None:
            from django.conf import settings

            secrets = [
                getattr(settings, "SECRET_KEY", None),
                *getattr(settings, "SECRET_KEY_FALLBACKS", ()),
                *secrets[1:],
            ]
            if not secrets[0]:
                raise _fail("OPTIONS['SIGN_VALUES']", "needs SIGNING_KEY or a SECRET_KEY")
        keys = tuple(derive_key(s) for s in secrets)
    elif values["SIGNING_KEY"] is not None or values["SIGNING_FALLBACK_KEYS"]:
        raise _fail("OPTIONS['SIGNING_KEY']", "has no effect without 'SIGN_VALUES': True")
    limit = values["MAX_VALUE_BYTES"]
    codec = None
    if keys or values["COMPRESSOR"] is not None:
        codec = Codec(serializer, keys, values["COMPRESSOR"], values["COMPRESS_MIN_BYTES"], limit)
    fallback = None if codec else lenient(serializer, limit)
    return ValueOptions(limit, values["UNREADABLE_VALUES"] == "raise", codec, fallback)


def unstorable(key: str, value: Any, exc: Exception) -> Exception:
    """The serializer's error, of the same type if it can be, naming the key."""
    if isinstance(exc, TooLarge):
        return too_large(key, exc.size, exc.limit)
    message = f"cannot serialize the value for key {key!r} ({type(value).__name__}): {exc}"
    try:
        return type(exc)(message)
    except Exception:
        return TypeError(message)


def too_large(key: str, size: int, limit: int) -> ValueError:
    return ValueError(
        f"the value for key {key!r} is {size:,} bytes serialized, above MAX_VALUE_BYTES "
        f"({limit:,}): not sent"
    )


def unreadable(
    cache: str, shard: str, key: str, exc: Exception, raising: bool, member: bool = False
) -> None:
    """Report a stored value (or set member) we will not use: raise, or warn (the caller
    reads a miss, or leaves the member out)."""
    what = f"a member of key {key!r}" if member else f"the value of key {key!r}"
    if raising:
        message = f"cache {cache!r} shard {shard!r}: {what} is unreadable: {exc}"
        raise UnreadableValue(message) from exc
    logger.warning(
        "cache %r shard %r: %s is unreadable (%s: %s); %s",
        cache, shard, what, type(exc).__name__, exc, "left out" if member else "read as a miss",
    )  # fmt: skip
