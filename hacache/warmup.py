"""Prewarming: functions registered per cache alias, run by ``manage.py hacache warm``.

A warm-up function takes no argument and returns an iterable of ``(key, value)`` pairs (a
generator, so a queryset is read lazily) or a dict. Keys are the ones the application uses
(before ``KEY_PREFIX`` and version). Its timeout and version are the registration's, for every
key it gives (two lifetimes: two functions)::

    @hacache.warmup.register(alias="default", timeout=3600, total=lambda: Page.objects.count())
    def pages():
        for page in Page.objects.iterator():
            yield f"page:{page.pk}", render_page(page)

``run`` writes what the functions give in ``set_many`` batches (each one pipeline per shard),
in ``order`` then registration order; a function that raises is reported and the next one runs.
The registry is process-wide; registering the same function again under its name replaces it
(an app's ``ready()`` may run twice), another function under a taken name is an error.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import count
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.exceptions import ImproperlyConfigured

from hacache.progress import Progress

logger = logging.getLogger(__name__)

BATCH = 500
FAILED_KEYS_KEPT = 20  # failed keys named in a result; the count is always complete

WarmFunction = Callable[[], Iterable[tuple[Any, Any]] | Mapping[Any, Any]]


@dataclass(frozen=True)
class WarmUp:
    alias: str
    name: str
    func: WarmFunction
    order: int = 0
    timeout: Any = DEFAULT_TIMEOUT  # the alias's TIMEOUT unless given
    version: int | None = None
    total: int | Callable[[], int] | None = None
    seq: int = 0  # registration order: ties on ``order`` run in it

    @property
    def where(self) -> str:
        return _qualified(self.func)


_registry: dict[str, dict[str, WarmUp]] = {}
_seq = count()


def _qualified(func: Any) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _same(a: Any, b: Any) -> bool:
    """The same function, also when its module was imported again (a second ``ready()``)."""
    if a is b:
        return True
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (
        code_a is not None
        and code_b is not None
        and _qualified(a) == _qualified(b)
        and code_a.co_firstlineno == code_b.co_firstlineno
    )


def register(
    func: WarmFunction | None = None,
    *,
    alias: str = "default",
    name: str | None = None,
    order: int = 0,
    timeout: Any = DEFAULT_TIMEOUT,
    version: int | None = None,
    total: int | Callable[[], int] | None = None,
) -> Any:
    """Register a warm-up function: ``@register``, ``@register(alias=...)`` or
    ``register(func, ...)``; returns the function unchanged.

    ``name`` defaults to the function's ``__name__`` and is unique per alias. ``total``, the
    number of keys it will give (an int, or a callable asked when it starts), lets the progress
    bar show an ETA; a list, tuple or dict result is counted without it.
    """

    def add(f: WarmFunction) -> WarmFunction:
        if not callable(f):
            raise TypeError(f"a warm-up must be a callable, not {f!r}")
        key = name if name is not None else getattr(f, "__name__", None)
        if not key or not isinstance(key, str) or key == "<lambda>":
            raise ImproperlyConfigured(f"warm-up {_qualified(f)} needs a name= to register")
        if total is not None and not callable(total) and (not isinstance(total, int) or total < 0):
            raise ImproperlyConfigured(f"warm-up {key!r}: total must be an int >= 0 or a callable")
        named = _registry.setdefault(alias, {})
        old = named.get(key)
        if old is not None and not _same(old.func, f):
            raise ImproperlyConfigured(
                f"a warm-up named {key!r} is already registered for cache alias {alias!r} "
                f"({old.where}); register {_qualified(f)} with another name="
            )
        seq = old.seq if old is not None else next(_seq)
        named[key] = WarmUp(alias, key, f, order, timeout, version, total, seq)
        return f

    return add if func is None else add(func)


def unregister(name: str, alias: str = "default") -> None:
    _registry.get(alias, {}).pop(name, None)


def registered(alias: str | None = None) -> list[WarmUp]:
    """The warm-ups of an alias (every alias: None), in the order ``run`` runs them."""
    found = [
        w for a, named in _registry.items() if alias is None or a == alias for w in named.values()
    ]
    return sorted(found, key=lambda w: (w.order, w.seq))


# -- running ---------------------------------------------------------------------------------


@dataclass
class WarmResult:
    alias: str
    name: str
    status: str = "not run"  # ok, failed (keys not stored), error (raised), interrupted, not run
    keys: int = 0  # stored (with --dry-run: given, nothing stored)
    failed: int = 0  # not stored: set_many's answer when the shard fails open
    failed_keys: list[str] = field(default_factory=list)  # the first FAILED_KEYS_KEPT of them
    seconds: float = 0.0
    shards: dict[str, int] = field(default_factory=dict)  # keys stored per shard
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.keys / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3), "rate": round(self.rate, 1)}


@dataclass
class WarmReport:
    results: list[WarmResult]
    dry_run: bool = False
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.status == "ok" for r in self.results)

    @property
    def keys(self) -> int:
        return sum(r.keys for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "keys": self.keys,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "functions": [r.as_dict() for r in self.results],
        }


class _Pacer:
    """At most ``rate`` keys a second overall: waits before a batch that would go early
    (``wait(0)``: until the keys sent so far have had their time)."""

    def __init__(self, rate: float | None, clock: Callable[[], float], sleep: Callable) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.start: float | None = None
        self.sent = 0

    def wait(self, n: int) -> None:
        if self.rate is None:
            return
        now = self.clock()
        if self.start is None:
            self.start = now
        due = self.start + self.sent / self.rate
        if due > now:
            self.sleep(due - now)
        self.sent += n


def select(alias: str | None = None, only: Sequence[str] = ()) -> list[WarmUp]:
    """The warm-ups ``run`` would run; an unknown name in ``only`` is a ``ValueError``."""
    found = registered(alias)
    if only:
        known = {w.name for w in found}
        unknown = [n for n in only if n not in known]
        if unknown:
            where = "" if alias is None else f" for cache alias {alias!r}"
            raise ValueError(
                f"no warm-up named {', '.join(map(repr, unknown))}{where} "
                f"(registered: {', '.join(sorted(known)) or 'none'})"
            )
        found = [w for w in found if w.name in only]
    return found


def run(
    warmups: Sequence[WarmUp],
    *,
    batch: int = BATCH,
    rate: float | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WarmReport:
    """Run ``warmups`` in turn; Ctrl-C stops after the function it interrupts (reported)."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    if rate is not None:
        if rate <= 0:
            raise ValueError("rate must be above 0")
        batch = min(batch, max(1, math.floor(rate / 10)))  # bursts of a tenth of a second
    progress = progress or Progress()
    pacer = _Pacer(rate, clock, sleep)
    report = WarmReport([WarmResult(w.alias, w.name) for w in warmups], dry_run)
    began = clock()
    for warmup, result in zip(warmups, report.results, strict=True):
        try:
            _run_one(warmup, result, batch, dry_run, pacer, progress, clock)
        except KeyboardInterrupt:
            report.interrupted = True
            break
    report.seconds = clock() - began
    return report


def _run_one(
    warmup: WarmUp,
    result: WarmResult,
    batch: int,
    dry_run: bool,
    pacer: _Pacer,
    progress: Progress,
    clock: Callable[[], float],
) -> None:
    cache = caches[warmup.alias]
    router = getattr(cache, "_router", None)
    began = clock()
    items: Iterator[Any] | None = None
    started = False

    writing = False  # an error while writing is the cache's: logged without a traceback

    def write(data: dict[Any, Any]) -> None:
        nonlocal writing
        failed: list[Any] = []
        if not dry_run:
            pacer.wait(len(data))
            writing = True
            failed = cache.set_many(data, warmup.timeout, warmup.version)
            writing = False
        if router is not None:
            lost = set(failed)
            made = [cache.make_key(k, version=warmup.version) for k in data if k not in lost]
            for shard, keys in router.group(made).items():
                result.shards[shard.name] = result.shards.get(shard.name, 0) + len(keys)
        result.keys += len(data) - len(failed)
        result.failed += len(failed)
        room = FAILED_KEYS_KEPT - len(result.failed_keys)
        result.failed_keys += [str(k) for k in failed[:room]]
        progress.advance(len(data))

    try:
        produced = warmup.func()
        if isinstance(produced, Mapping):
            total: int | None = len(produced)
            items = iter(produced.items())
        else:
            total = warmup.total() if callable(warmup.total) else warmup.total
            if total is None and isinstance(produced, Sequence):
                total = len(produced)
            items = iter(produced)
        progress.start(f"{warmup.alias}/{warmup.name}", total)
        started = True
        pending: dict[Any, Any] = {}
        try:
            for item in items:
                key, value = _pair(item)
                pending[key] = value
                if len(pending) >= batch:
                    full, pending = pending, {}
                    write(full)
        except Exception:
            if pending and not writing:
                try:
                    write(pending)  # what it gave before it raised
                except Exception:
                    writing = False  # the function's error is the one to report
            raise
        if pending:
            write(pending)
        if not dry_run:
            pacer.wait(0)  # the last batch's share of time too, so its rate holds
        result.status = "failed" if result.failed else "ok"
    except KeyboardInterrupt:
        result.status = "interrupted"
        raise
    except Exception as exc:
        result.status = "error"
        result.error = f"{type(exc).__name__}: {exc}"
        logger.error(
            "warm-up %s/%s %s: %s", warmup.alias, warmup.name,
            "could not write" if writing else "raised", result.error, exc_info=not writing,
        )  # fmt: skip
    finally:
        result.seconds = clock() - began
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a generator stopped early lets go of its cursor now
        if not started:
            progress.start(f"{warmup.alias}/{warmup.name}")
        progress.finish(_note(result))


def _pair(item: Any) -> tuple[Any, Any]:
    try:
        key, value = item
    except (TypeError, ValueError):
        raise TypeError(
            f"gave {type(item).__name__} {item!r:.60}, not a (key, value) pair"
        ) from None
    return key, value


def _note(result: WarmResult) -> str:
    if result.status == "error":
        return f"ERROR {result.error}"
    if result.status == "interrupted":
        return "interrupted"
    return f"{result.failed:,} failed" if result.failed else ""
