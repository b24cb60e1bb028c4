"""Readable, aligned text for ``manage.py hacache``, from ``inspection``'s, ``warmup``'s and
``mover``'s results.

Only formats: it asks nothing of Redis. What it prints comes from the result dataclasses,
which hold addresses and names, never a password.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from hacache.inspection import Location, RingShare, ShardStatus

if TYPE_CHECKING:
    from hacache.mover import Summary
    from hacache.warmup import WarmReport, WarmUp

BAR_WIDTH = 40


def table(rows: Sequence[Sequence[object]]) -> list[str]:
    """Columns padded to their widest cell; the first row is the header."""
    cells = [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def size(n: int | None) -> str | None:
    if n is None:
        return None
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return None  # unreachable


def _flags(flags: Iterable[str] | None) -> str | None:
    return None if flags is None else ",".join(flags)


def _role(expected: str, reported: str | None) -> str:
    return expected if reported in (None, expected) else f"{expected} (says {reported})"


def status_text(shards: list[ShardStatus]) -> str:
    lines: list[str] = []
    for shard in shards:
        near = (
            ""
            if shard.near_cache_trusted is None
            else (f"  near-cache: {'trusted' if shard.near_cache_trusted else 'untrusted'}")
        )
        state = "ok" if shard.ok else "MASTER UNREACHABLE"
        lines.append(f"shard {shard.name} ({shard.kind}, weight {shard.weight}): {state}{near}")
        report = shard.sentinel
        if report is not None:
            lines.append(
                f"  sentinel: service {report.service}, {report.answered}/{report.sentinels} "
                f"sentinels answered, config-epoch {report.config_epoch}"
                + (f" ({report.error})" if report.error else "")
            )
        rows: list[list[object]] = [
            ["role", "address", "up", "latency", "version", "memory", "maxmemory", "keys",
             "clients", "breaker", "sentinel flags"],
        ]  # fmt: skip
        for s in shard.servers:
            rows.append([
                _role(s.role, s.reported_role),
                s.address, "yes" if s.reachable else "NO",
                None if s.latency_ms is None else f"{s.latency_ms:.2f} ms",
                s.redis_version, size(s.used_memory),
                None if s.maxmemory is None else (size(s.maxmemory) if s.maxmemory else "none"),
                s.keys, s.connected_clients, s.breaker, _flags(s.sentinel_flags),
            ])  # fmt: skip
        lines += ["  " + line for line in table(rows)]
        lines += [f"  {s.address}: {s.error}" for s in shard.servers if s.error]
        lines.append("")
    down = [s.name for s in shards if not s.ok]
    lines.append(
        f"{len(shards) - len(down)}/{len(shards)} shards have a reachable master"
        + (f"; unreachable: {', '.join(down)}" if down else "")
    )
    lines.append("(breaker and near-cache states are this process's own)")
    return "\n".join(lines)


def ring_text(shares: list[RingShare], sample: int, placement: str) -> str:
    rows: list[list[object]] = [["shard", "weight", "points", "expected", "measured", ""]]
    top = max((s.measured for s in shares), default=0) or 1
    for s in shares:
        bar = "#" * round(BAR_WIDTH * s.measured / top)
        rows.append([s.name, s.weight, s.points, f"{s.expected:.1%}", f"{s.measured:.1%}", bar])
    total = sum(s.points for s in shares)
    return "\n".join(
        [*table(rows), f"{placement} placement, {total} points, {sample} random keys sampled"]
    )


def locate_text(found: Location) -> str:
    if found.exists is None:
        exists = "unknown"
    elif not found.exists:
        exists = "no"
    elif found.ttl_seconds is None:
        exists = "yes, no expiry"
    else:
        exists = f"yes, expires in {found.ttl_seconds:.3f} s"
    shard = found.shard
    if found.home_shard != found.shard:
        shard += f" (ejected from {found.home_shard})"
    rows = [
        ["key", found.key],
        ["redis key", found.redis_key],
        ["shard", shard],
        ["master", found.master],
        ["replicas", ", ".join(found.replicas) or "none"],
        ["exists", exists],
    ]
    if found.error:
        rows.append(["error", found.error])
    return "\n".join(table([["", ""], *rows])[1:])


def _timeout(timeout: object) -> str:
    from django.core.cache.backends.base import DEFAULT_TIMEOUT

    if timeout is DEFAULT_TIMEOUT:
        return "alias's"
    return "never" if timeout is None else f"{timeout} s"


def warmups_text(warmups: list[WarmUp]) -> str:
    if not warmups:
        return "No warm-ups registered (hacache.warmup.register)."
    rows: list[list[object]] = [["alias", "warm-up", "order", "timeout", "version", "total",
                                 "function"]]  # fmt: skip
    for w in warmups:
        total = "callable" if callable(w.total) else w.total
        rows.append([w.alias, w.name, w.order, _timeout(w.timeout), w.version, total, w.where])
    return "\n".join(table(rows))


def warm_text(report: WarmReport) -> str:
    rows: list[list[object]] = [["alias", "warm-up", "keys", "failed", "seconds", "keys/s",
                                 "status"]]  # fmt: skip
    for r in report.results:
        ran = r.status != "not run"
        rows.append([
            r.alias, r.name, f"{r.keys:,}" if ran else None, f"{r.failed:,}" if ran else None,
            f"{r.seconds:.2f}" if ran else None, f"{r.rate:,.0f}" if ran else None, r.status,
        ])  # fmt: skip
    shards: dict[str, int] = {}
    for r in report.results:
        for name, n in r.shards.items():
            shards[name] = shards.get(name, 0) + n
    per_shard = ", ".join(f"{name} {n:,}" for name, n in sorted(shards.items()))
    done = (
        f"dry run, nothing written: {report.keys:,} keys would be written"
        if report.dry_run
        else f"{report.keys:,} keys written in {report.seconds:.2f} s"
    )
    lines = [*table(rows), done + (f" ({per_shard})" if per_shard else "")]
    for r in report.results:
        if r.failed:
            shown = ", ".join(r.failed_keys) + (", ..." if r.failed > len(r.failed_keys) else "")
            lines.append(f"{r.alias}/{r.name}: {r.failed:,} keys not stored: {shown}")
        if r.error:
            lines.append(f"{r.alias}/{r.name} stopped: {r.error}")
    if report.interrupted:
        lines.append("interrupted (Ctrl-C): the warm-ups marked 'not run' did not start")
    return "\n".join(lines)


def warmup_dict(w: WarmUp) -> dict[str, object]:
    """A registered warm-up for ``warm --list --json``."""
    from django.core.cache.backends.base import DEFAULT_TIMEOUT

    return {
        "alias": w.alias, "name": w.name, "order": w.order,
        "timeout": "alias" if w.timeout is DEFAULT_TIMEOUT else w.timeout,
        "version": w.version, "total": "callable" if callable(w.total) else w.total,
        "function": w.where,
    }  # fmt: skip


def reshard_left_text(alias: str, left: int) -> str:
    if left == 0:
        return (f"No key of {alias!r} is left on a previous owner: PREVIOUS_LOCATION can be "
                "removed from its OPTIONS.")  # fmt: skip
    return (f"{left:,} key(s) of {alias!r} still live on a previous owner: run "
            "`manage.py hacache reshard`.")  # fmt: skip


def reshard_text(alias: str, summary: Summary) -> str:
    rows = [("shard", "scanned", "moved", "kept newer")]
    rows += [(s.shard, f"{s.scanned:,}", f"{s.moved:,}", f"{s.kept_newer:,}")
             for s in summary.shards]  # fmt: skip
    rate = summary.moved / summary.seconds if summary.seconds > 0 else 0.0
    lines = [*table(rows),
             f"{summary.moved:,} keys moved in {summary.seconds:.1f} s ({rate:,.0f} keys/s).",
             reshard_left_text(alias, summary.left_to_move)]  # fmt: skip
    if summary.left_to_move:
        lines.append("Keys still arrive on previous owners: is a process still running with "
                     "the old LOCATION?")  # fmt: skip
    return "\n".join(lines)
