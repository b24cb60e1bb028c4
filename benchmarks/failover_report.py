"""The failover benchmark's numbers: operation records in, measures, targets, tables and plots out.

``benchmarks/failover.py`` runs the load and saves one result per backend; everything here is
pure computation on those results (plus matplotlib for the PNG), so a saved run can be reported
again without Redis. Times inside a result are ``time.monotonic()`` seconds; every time this
module reports is in ms relative to the kill (the SIGKILL or SIGSTOP of the master).
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKENDS = ("hacache", "django_redis")
LABELS = {"hacache": "hacache", "django_redis": "django-redis"}
COLORS = {"hacache": "tab:blue", "django_redis": "tab:orange"}

BIN = 0.050  # seconds per bin in the plot and in the JSON series
SLOW = 0.100  # seconds: such operations are also drawn one by one, from start to end
DURING_TAIL = 1.0  # "during" the failover runs from the kill to one second after the switch
# Read gaps are judged from the kill to this long after the last failover event (the first
# +switch-master, or SIGCONT if later): the other sentinels announce the switch up to about a
# second after the first, and the old master shows up as a replica (+sdown) a second after that.
# Later gaps, with nothing failing, are the machine's: reported, not judged.
GAP_TAIL = 3.0

# The targets. Read gaps: the longest time any reader thread went without a read
# returning; the pause target is looser because a hung server costs at least a detection delay.
READ_GAP_TARGET_MS = {"kill": 50.0, "pause": 150.0}
# "No added latency" on the shards that were not killed: their p99 during the failover may
# exceed the p99 before the kill by this factor plus this slack, no more (with no failover at
# all, the read p99 of successive 3-4 s windows differed by up to 1.3x on the 2-CPU machine the
# first runs used), and no call on them may take longer than SLOW after the kill (a socket
# timeout or a wait for Sentinel would; the machine's own stalls stayed under 30 ms).
LATENCY_FACTOR = 2.0
LATENCY_SLACK_MS = 0.5

# Operation records, one tuple per call: (start, latency, op, thread, key, status, detail).
# ``thread`` numbers the writers first, then the readers; ``key`` is the key's index; detail is
# the error class name, "value<floor" for a read older than acknowledged ("None<floor" for a
# miss), or "".
SET, GET = 0, 1
OK, ERROR, OLDER, MISSING = 0, 1, 2, 3
Record = tuple[float, float, int, int, int, int, str]
RECORD_FIELDS = (
    "start_ms (from the kill)",
    "latency_ms",
    "op (0 set, 1 get)",
    "thread (writers first, then readers)",
    "key index",
    "status (0 ok, 1 error, 2 older than acknowledged, 3 missing)",
    "error class, or value<floor for a read that was not ok",
)
# Key groups: every key, and with several shards the killed shard's keys and the others'.
ALL, KILLED, OTHERS = "all", "killed shard", "other shards"
KILLED_SHARD = "shard0"  # the first shard (index 0 in a placement) is the one whose master dies


@dataclass(frozen=True)
class Window:
    """When things happened, in ``time.monotonic()`` seconds (shared by every process)."""

    start: float  # the load began
    stop: float  # the load ended
    kill: float  # SIGKILL or SIGSTOP sent to the master
    switch: float | None  # first +switch-master from any sentinel
    resume: float | None = None  # SIGCONT sent (pause mode)

    @property
    def settled(self) -> float:
        """End of the stretch over which read gaps are judged (see GAP_TAIL)."""
        if self.switch is None:
            return self.stop
        return min(self.stop, max(self.switch, self.resume or self.switch) + GAP_TAIL)

    def spans(self) -> dict[str, float]:
        """Seconds of load in each phase."""
        during_end = self.stop if self.switch is None else self.switch + DURING_TAIL
        during_end = min(self.stop, during_end)
        return {
            "before": self.kill - self.start,
            "during": during_end - self.kill,
            "after": self.stop - during_end,
        }

    def phase(self, t: float) -> str:
        during_end = math.inf if self.switch is None else self.switch + DURING_TAIL
        return "before" if t < self.kill else "during" if t < during_end else "after"


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _pct(values: Sequence[float], q: float) -> float:
    """Nearest rank: always a latency that was really observed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _latency(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "p50_ms": _pct(values, 0.50) * 1000,
        "p99_ms": _pct(values, 0.99) * 1000,
        "max_ms": max(values) * 1000,
    }


def _longest_gap(done: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    """Longest stretch of [lo, hi] with no completion in it: (length, where it starts)."""
    edges = [lo, *sorted(t for t in done if lo <= t <= hi), hi]
    best, at = 0.0, lo
    for a, b in itertools.pairwise(edges):
        if b - a > best:
            best, at = b - a, a
    return best, at


def _gaps(done: Sequence[float], w: Window, until: float) -> tuple[float, float, float]:
    """(gap, where it starts, noise): the longest gap from the last completion before the kill
    to ``until``, and the longest one before that, the machine's own stalls."""
    since = max((t for t in done if t <= w.kill), default=w.start)
    gap, at = _longest_gap(done, since, until)
    noise, _ = _longest_gap(done, w.start, since)
    return gap, at, noise


def lost_versions(wrong: list[Record]) -> int:
    """Acknowledged versions some later read did not see: per key, the union of the ranges
    (value, floor] the wrong reads revealed (a missing value misses versions 0..floor).

    From the master, that is data lost; from a replica, it may be lag.
    """
    ranges: dict[int, list[tuple[int, int]]] = {}
    for r in wrong:
        value, _, floor = r[6].partition("<")
        low = -1 if value == "None" else int(value)
        ranges.setdefault(r[4], []).append((low, int(floor)))
    total = 0
    for spans in ranges.values():
        reach = None
        for low, high in sorted(spans):
            low = low if reach is None else max(low, reach)
            if high > low:
                total += high - low
                reach = high
    return total


def group_keys(placement: Sequence[int], shards: int) -> dict[str, set[int] | None]:
    """Which keys (by index) each group covers, None for all of them: every key, and with
    several shards also the killed shard's (shard0) and the others'."""
    if shards == 1:
        return {ALL: None}
    return {
        ALL: None,
        KILLED: {k for k, s in enumerate(placement) if s == 0},
        OTHERS: {k for k, s in enumerate(placement) if s != 0},
    }


def plotted_groups(shards: int) -> tuple[str, ...]:
    return (ALL,) if shards == 1 else (OTHERS, KILLED)


def _in_group(records: list[Record], keys: set[int] | None) -> list[Record]:
    return records if keys is None else [r for r in records if r[4] in keys]


def summarize(
    result: dict[str, Any], w: Window, fail_open: bool, keys: set[int] | None
) -> dict[str, Any]:
    """One backend's numbers over one group of keys."""
    records = _in_group(result["records"], keys)
    writers = result["writers"]
    reads = [r for r in records if r[2] == GET]
    writes = [r for r in records if r[2] == SET]

    def errors_by_class(rs: list[Record]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in rs:
            if r[5] == ERROR:
                counts[r[6]] = counts.get(r[6], 0) + 1
        return counts

    # A read "succeeds" when it returns: what it returned is judged apart (wrong values).
    good_reads = [r[0] + r[1] for r in reads if r[5] != ERROR]
    good_writes = [r[0] + r[1] for r in writes if r[5] == OK]
    read_gap, read_gap_at, read_noise = _gaps(good_reads, w, w.settled)
    write_gap, write_gap_at, write_noise = _gaps(good_writes, w, w.stop)
    # Per reader thread: a reader only reads, so its gap is exactly how long its reads stalled
    # or kept failing (the process-wide gap hides one thread's stall behind another's reads).
    reader = {"gap": (0.0, w.kill), "whole": (0.0, w.kill)}
    reader_noise = 0.0
    for thread in range(writers, writers + result["readers"]):
        done = [r[0] + r[1] for r in reads if r[3] == thread and r[5] != ERROR]
        for name, until in (("gap", w.settled), ("whole", w.stop)):
            gap, at, noise = _gaps(done, w, until)
            reader_noise = max(reader_noise, noise)
            reader[name] = max(reader[name], (gap, at))
    # Writes resumed where the outage (the longest write gap after the kill) ended.
    resumed = write_gap_at + write_gap if write_gap_at + write_gap < w.stop else None
    moves = result.get("master_moves") or []
    moved = moves[0][0] if moves else None
    older = [r for r in reads if r[5] == OLDER]
    missing = [r for r in reads if r[5] == MISSING]
    # A miss is wrong unless failing open: every key was written before the load, without expiry.
    wrong = older if fail_open else older + missing
    latency = {
        kind: {
            p: _latency([r[1] for r in rs if w.phase(r[0]) == p])
            for p in ("before", "during", "after")
        }
        for kind, rs in (("read", reads), ("write", writes))
    }
    before = [r for r in records if r[0] < w.kill]
    errors = [r[0] + r[1] for r in records if r[5] == ERROR]
    return {
        "ops": len(records),
        "reads": len(reads),
        "writes": len(writes),
        "ops_per_s": {
            p: (sum(w.phase(r[0]) == p for r in records) / span if span > 0 else None)
            for p, span in w.spans().items()
        },
        "read_errors": sum(r[5] == ERROR for r in reads),
        "write_errors": sum(r[5] == ERROR for r in writes),
        "read_errors_by_class": errors_by_class(reads),
        "write_errors_by_class": errors_by_class(writes),
        "first_error_ms": ms(min(errors) - w.kill) if errors else None,
        "last_error_ms": ms(max(errors) - w.kill) if errors else None,
        "older_values": len(older),
        "missing_values": len(missing),
        "wrong_values": len(wrong),
        "misses": len(missing) if fail_open else 0,
        "acked_versions_missed": lost_versions(wrong),
        "wrong_by_phase": {
            p: sum(w.phase(r[0]) == p for r in wrong) for p in ("before", "during", "after")
        },
        "wrong_by_lane": {
            "writer (read own write)": sum(r[3] < writers for r in wrong),
            "reader": sum(r[3] >= writers for r in wrong),
        },
        "read_gap_ms": ms(read_gap),
        "read_gap_starts_ms": ms(read_gap_at - w.kill),
        "reader_thread_gap_ms": ms(reader["gap"][0]),
        "reader_thread_gap_starts_ms": ms(reader["gap"][1] - w.kill),
        "reader_thread_gap_to_end_ms": ms(reader["whole"][0]),
        "reader_thread_gap_to_end_starts_ms": ms(reader["whole"][1] - w.kill),
        "write_gap_ms": ms(write_gap),
        "write_gap_starts_ms": ms(write_gap_at - w.kill),
        "read_gap_before_kill_ms": ms(read_noise),
        "reader_thread_gap_before_kill_ms": ms(reader_noise),
        "write_gap_before_kill_ms": ms(write_noise),
        "writes_resumed_ms": ms(None if resumed is None else resumed - w.kill),
        "switch_to_writes_resumed_ms": ms(
            None if resumed is None or w.switch is None else resumed - w.switch
        ),
        "switch_to_client_moved_ms": ms(
            None if moved is None or w.switch is None else moved - w.switch
        ),
        "latency": latency,
        "slow_calls": {
            "before": sum(r[1] >= SLOW for r in before),
            "after": sum(r[1] >= SLOW for r in records if r[0] >= w.kill),
        },
    }


def series(
    result: dict[str, Any], w: Window, fail_open: bool, keys: set[int] | None
) -> dict[str, Any]:
    """Per-50 ms bins (by start for latency, by completion for counts), x relative to the kill."""
    n = math.ceil((w.stop - w.start) / BIN) + 1
    lat: dict[int, list[list[float]]] = {SET: [[] for _ in range(n)], GET: [[] for _ in range(n)]}
    counts = {name: [0] * n for name in ("read_errors", "write_errors", "wrong", "misses")}
    slow: list[tuple[float, float, int, int]] = []
    for t, latency, op, _thread, _key, status, _ in _in_group(result["records"], keys):
        lat[op][min(n - 1, int((t - w.start) / BIN))].append(latency)
        if latency >= SLOW and len(slow) < 1000:
            slow.append((round(t - w.kill, 4), round(latency * 1000, 2), op, status))
        if status == ERROR:
            name = "read_errors" if op == GET else "write_errors"
        elif status == OLDER or (status == MISSING and not fail_open):
            name = "wrong"
        elif status == MISSING:
            name = "misses"
        else:
            continue
        counts[name][min(n - 1, int((t + latency - w.start) / BIN))] += 1

    def p99(bins: list[list[float]]) -> list[float | None]:
        return [_pct(b, 0.99) * 1000 if b else None for b in bins]

    return {
        "t": [round(w.start - w.kill + (i + 0.5) * BIN, 4) for i in range(n)],
        "read_p99_ms": p99(lat[GET]),
        "write_p99_ms": p99(lat[SET]),
        **counts,
        "slow_ops": slow,  # (start s, latency ms, op 0 set / 1 get, status 0 ok / 1 error ...)
    }


def backend_report(
    result: dict[str, Any], w: Window, shards: int, fail_open: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One backend's part of the report (numbers per key group, and what hacache saw), and its
    plotted series per group."""
    groups = group_keys(result["placement"], shards)
    numbers = {
        "placement": [sum(s == i for s in result["placement"]) for i in range(shards)],
        "groups": {g: summarize(result, w, fail_open, keys) for g, keys in groups.items()},
        "error_samples": {
            name: [(ms(t - w.kill), msg) for t, msg in kept]
            for name, kept in result["samples"].items()
        },
        "client_moved_master_ms": [
            (ms(t - w.kill), shard, addr) for t, shard, addr in result["master_moves"]
        ],
        "hacache_view": [(ms(t - w.kill), *rest) for t, *rest in result["hacache_view"]],
        "log": [(ms(t - w.kill), level, msg) for t, level, msg in result["log"]],
    }
    plotted = {g: series(result, w, fail_open, groups[g]) for g in plotted_groups(shards)}
    return numbers, plotted


# --------------------------------------------------------------------------- targets


def judge(report: dict[str, Any], backend: str) -> list[dict[str, Any]]:
    """The issue's targets for this run's set-up, applied to one backend.

    Each check: measure, target (text), measured (text), met (True, False, or None for a
    number shown for context only).
    """
    c = report["config"]
    groups = report["backends"][backend]["groups"]
    checks: list[dict[str, Any]] = []

    def add(measure: str, target: str, measured: str, met: bool | None) -> None:
        checks.append({"measure": measure, "target": target, "measured": measured, "met": met})

    if c["shards"] == 1:
        g = groups[ALL]
        if c["fail_open"]:
            errors = g["read_errors"] + g["write_errors"]
            add("errors, reads + writes", "0", f"{errors:,}", errors == 0)
            older = g["older_values"]
            add("reads older than an acknowledged write", "0", f"{older:,}", older == 0)
            add("misses (counted, not wrong)", "-", f"{g['misses']:,}", None)
        else:
            add("read errors", "0", f"{g['read_errors']:,}", g["read_errors"] == 0)
            wrong = f"{g['wrong_values']:,} ({g['older_values']:,} / {g['missing_values']:,})"
            add("wrong values (older / missing)", "0", wrong, g["wrong_values"] == 0)
            add("write errors", "-", f"{g['write_errors']:,}", None)
        gap, target = g["reader_thread_gap_ms"], READ_GAP_TARGET_MS[c["mode"]]
        add(
            f"longest read gap, ms (any reader thread, kill to {GAP_TAIL:g} s after "
            f"{'SIGCONT' if c['mode'] == 'pause' else '+switch-master'}; at kill + ms)",
            f"< {target:.0f}",
            f"{_fmt(gap)} (at {_fmt(g['reader_thread_gap_starts_ms'], 0)})",
            gap < target,
        )
        add(
            "read gap, ms: to the end of the load (at kill + ms) / process-wide / before the kill",
            "-",
            f"{_fmt(g['reader_thread_gap_to_end_ms'])} "
            f"(at {_fmt(g['reader_thread_gap_to_end_starts_ms'], 0)}) / "
            f"{_fmt(g['read_gap_ms'])} / {_fmt(g['reader_thread_gap_before_kill_ms'])}",
            None,
        )
        if not c["fail_open"]:  # failing open, a dropped write returns like a stored one
            resumed = _fmt(g["switch_to_writes_resumed_ms"])
            add("writes resumed, ms after the first +switch-master", "-", resumed, None)
        return checks
    o, k = groups[OTHERS], groups[KILLED]
    errors = o["read_errors"] + o["write_errors"]
    add("other shards: errors, reads + writes", "0", f"{errors:,}", errors == 0)
    add("other shards: wrong values", "0", f"{o['wrong_values']:,}", o["wrong_values"] == 0)
    for kind in ("read", "write"):
        lat = o["latency"][kind]
        before, during = lat["before"]["p99_ms"], lat["during"]["p99_ms"]
        met = None if before is None or during is None else during <= _tolerated(before)
        add(
            f"other shards: {kind} p99 ms, before / during / after the failover",
            f"during <= {LATENCY_FACTOR:g} x before + {LATENCY_SLACK_MS:g}",
            " / ".join(_fmt(lat[p]["p99_ms"], 2) for p in ("before", "during", "after")),
            met,
        )
    rates = " / ".join(_fmt(o["ops_per_s"][p], 0) for p in ("before", "during", "after"))
    add("other shards: calls per second, before / during / after", "-", rates, None)
    slow = o["slow_calls"]
    add(
        f"other shards: calls over {SLOW * 1000:.0f} ms, before / after the kill",
        "0 after",
        f"{slow['before']:,} / {slow['after']:,}",
        slow["after"] == 0,
    )
    add(
        "killed shard: read errors / wrong values",
        "-",
        f"{k['read_errors']:,} / {k['wrong_values']:,}",
        None,
    )
    return checks


def _tolerated(before_ms: float) -> float:
    return before_ms * LATENCY_FACTOR + LATENCY_SLACK_MS


# --------------------------------------------------------------------------- console table


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _lat_cell(d: dict[str, Any]) -> str:
    if not d["n"]:
        return "-"
    return f"{d['p50_ms']:.2f} / {d['p99_ms']:.1f} / {d['max_ms']:.0f}"


def _gap(g: dict[str, Any], name: str) -> str:
    """A gap and where it started: ``name`` is the key without ``_ms``."""
    return f"{_fmt(g[f'{name}_ms'])} ({_fmt(g[f'{name}_starts_ms'])})"


def table(report: dict[str, Any], group: str) -> str:
    b = {k: report["backends"][k]["groups"][group] for k in BACKENDS}
    t = report["timeline_ms"]

    def row(label: str, cell: Any) -> tuple[str, ...]:
        return (label, *(cell(b[k]) for k in BACKENDS))

    rows: list[tuple[str, ...]] = [
        ("", *(LABELS[k] for k in BACKENDS)),
        row("ops (reads / writes)", lambda g: f"{g['reads']:,} / {g['writes']:,}"),
        row("ops/s before the kill", lambda g: _fmt(g["ops_per_s"]["before"], 0)),
        row("read errors to the caller", lambda g: _fmt(g["read_errors"])),
        row("write errors to the caller", lambda g: _fmt(g["write_errors"])),
        row("reads older than acknowledged", lambda g: _fmt(g["older_values"])),
        row("reads missing a written key", lambda g: _fmt(g["missing_values"])),
        row("wrong values (judged)", lambda g: _fmt(g["wrong_values"])),
        row("  acknowledged versions they missed", lambda g: _fmt(g["acked_versions_missed"])),
        row(
            "  of which before / during / after",
            lambda g: " / ".join(f"{v:,}" for v in g["wrong_by_phase"].values()),
        ),
        row(
            f"reader-thread read gap, ms, to kill+{_fmt(t['read_gaps_judged_until'], 0)} (at)",
            lambda g: _gap(g, "reader_thread_gap"),
        ),
        row("  to the end of the load", lambda g: _gap(g, "reader_thread_gap_to_end")),
        row("  process-wide", lambda g: _gap(g, "read_gap")),
        row("write gap, ms (at kill+ms)", lambda g: _gap(g, "write_gap")),
        row(
            "  reader / write gap before the kill (noise)",
            lambda g: (
                f"{_fmt(g['reader_thread_gap_before_kill_ms'])} / "
                f"{_fmt(g['write_gap_before_kill_ms'])}"
            ),
        ),
        row("kill -> first +switch-master, ms", lambda g: _fmt(t["switch_master"])),
        row(
            "writes resumed, ms after +switch-master",
            lambda g: _fmt(g["switch_to_writes_resumed_ms"]),
        ),
        row("  +switch-master -> client moved, ms", lambda g: _fmt(g["switch_to_client_moved_ms"])),
    ]
    for kind, p in itertools.product(("read", "write"), ("before", "during", "after")):
        cells = (_lat_cell(b[k]["latency"][kind][p]) for k in BACKENDS)
        rows.append((f"{kind} p50/p99/max ms, {p}", *cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, cells in enumerate(rows):
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        lines.append("  ".join(out))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown summary

VERDICT = {True: "PASS", False: "FAIL", None: ""}


def _settings_lines(report: dict[str, Any]) -> list[str]:
    c = report["config"]
    hacache = report["hacache"]["OPTIONS"]
    shown = {k: v for k, v in report["django_redis"]["OPTIONS"].items() if k != "SENTINELS"}
    return [
        f"- {c['topology']}; down-after {c['down_after_ms']} ms, failover-timeout "
        f"{c['failover_timeout_ms']} ms.",
        f"- Load per backend: {c['load']}; {c['seconds']:g} s, the kill at {c['kill_at']:g} s.",
        f"- hacache OPTIONS `{hacache}`: hacache's own defaults otherwise.",
        f"- django-redis OPTIONS `{shown}` + SENTINELS.",
    ]


def severity(report: dict[str, Any]) -> tuple[int, int]:
    """How badly hacache did in one run: targets failed, then errors and wrong values."""
    g = report["backends"]["hacache"]["groups"][ALL]
    failed = sum(check["met"] is False for check in report["targets"]["hacache"])
    return failed, g["read_errors"] + g["write_errors"] + g["wrong_values"]


def _verdict(met: list[bool | None]) -> str:
    if all(m is None for m in met):
        return ""
    failed = sum(m is False for m in met)
    if not failed:
        return "PASS"
    return "FAIL" if len(met) == 1 else f"FAIL ({failed}/{len(met)})"


def summary_markdown(scenarios: list[list[dict[str, Any]]], meta: dict[str, str]) -> str:
    """One table over every scenario: hacache against django-redis, a verdict per target.

    ``scenarios`` holds each scenario's runs, in run order; with several runs a cell lists
    every run's value and a verdict passes only if every run met the target.
    """
    repeats = max(len(runs) for runs in scenarios)
    lines = [
        "# Failover scenarios (issue 8): hacache and django-redis's SentinelClient",
        "",
        f"From `{meta['command']}` at {meta['when']}, hacache at `{meta['commit']}`"
        f"{' (with uncommitted changes)' if meta.get('dirty') else ''}; "
        f"{meta['machine']}. In each run both backends are under the same load at once, in two "
        "processes, through the same failover."
        + (
            f" Each scenario ran {repeats} times: a cell lists every run's value, in run "
            "order, and a verdict is PASS only if every run met the target."
            if repeats > 1
            else ""
        ),
        "",
        "| scenario | measure | target | hacache | | django-redis | |",
        "| --- | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for runs in scenarios:
        for i, first in enumerate(runs[0]["targets"]["hacache"]):
            cells = []
            for b in BACKENDS:
                checks = [run["targets"][b][i] for run in runs]
                cells.append(" · ".join(c["measured"] for c in checks))
                cells.append(_verdict([c["met"] for c in checks]))
            name = f"**{runs[0]['scenario']}**" if i == 0 else ""
            lines.append(
                f"| {name} | {first['measure']} | {first['target']} | {' | '.join(cells)} |"
            )
    lines += ["", "## Set-ups", ""]
    for runs in scenarios:
        lines += [f"### {runs[0]['scenario']}: {runs[0]['title']}", "", *_settings_lines(runs[0])]
        for report in runs:
            lines += _run_lines(report, len(runs) > 1)
        lines.append("")
    lines += COLUMN_NOTES
    return "\n".join(lines) + "\n"


def _intervals(rows: list[Any], key: Any, bad: Any) -> dict[Any, list[tuple[float, Any]]]:
    """Per ``key(row)``, the stretches (start ms, end ms or None: to the end) where ``bad(row)``
    held; rows are state changes, in time order, each starting with its ms."""
    spans: dict[Any, list[tuple[float, Any]]] = {}
    for row in rows:
        mine = spans.setdefault(key(row), [])
        open_span = bool(mine) and mine[-1][1] is None
        if bad(row) and not open_span:
            mine.append((row[0], None))
        elif not bad(row) and open_span:
            mine[-1] = (mine[-1][0], row[0])
    return {k: v for k, v in spans.items() if v}


def _spans_text(spans: list[tuple[float, Any]]) -> str:
    return ", ".join(f"{_fmt(a, 0)} to {'the end' if b is None else _fmt(b, 0)}" for a, b in spans)


def evidence(report: dict[str, Any]) -> list[str]:
    """What Sentinel said about shard0's replicas, and what hacache made of it."""
    lines = []
    flagged = _intervals(
        report.get("sentinel_replica_flags", []),
        key=lambda r: (r[1], r[2]),
        bad=lambda r: "disconnected" in r[3].split(","),
    )
    for (sentinel, replica), spans in sorted(flagged.items()):
        lines.append(
            f"{sentinel} flagged {replica} `disconnected` (until it cleared the flag or stopped "
            f"listing it as a replica), ms: {_spans_text(spans)}"
        )
    stranded = _intervals(
        [v for v in report["backends"]["hacache"]["hacache_view"] if v[1] == KILLED_SHARD],
        key=lambda v: v[1],
        bad=lambda v: v[3] and not v[4],  # its master's breaker open, and no replica listed
    )
    for spans in stranded.values():
        lines.append(f"hacache: master's breaker open and no replica to read from, ms: "
                     f"{_spans_text(spans)}")  # fmt: skip
    return lines


def _run_lines(report: dict[str, Any], several: bool) -> list[str]:
    t = report["timeline_ms"]
    moves = report["backends"]["hacache"]["client_moved_master_ms"]
    head = f"- Run {report['run']}: " if several else "- "
    lines = [
        f"{head}Sentinel, ms after the kill: +odown {_fmt(t.get('odown'))}, +promoted-slave "
        f"{_fmt(t.get('promoted'))}, first +switch-master {_fmt(t.get('switch_master'))}"
        + (f", SIGCONT {_fmt(t.get('resumed'))}" if t.get("resumed") is not None else "")
        + f"; {len(report['switches'])} promotion(s). hacache moved to a new master at, ms: "
        f"{', '.join(f'{at} ({shard} to {addr})' for at, shard, addr in moves) or 'never'}. "
        f"Machine load average before / after: "
        f"{' / '.join(map(str, report['config']['load_average_before_after']))}."
    ]
    for b in BACKENDS:
        for kind in ("read", "write"):
            counts = report["backends"][b]["groups"][ALL][f"{kind}_errors_by_class"]
            if counts:
                lines.append(f"  {LABELS[b]} {kind} errors by class: `{counts}`.")
    lines += [f"  {line}." for line in evidence(report)]
    plotted = (
        " (hacache's worst run: the scenario's plot)" if report.get("worst_of_several") else ""
    )
    lines.append(f"  Plot `{report['png']}`{plotted}; JSON `{report['json']}`.")
    return lines


COLUMN_NOTES = [
    "## What the columns mean",
    "",
    "- **target**: the issue's goal for hacache; `-` is context, not judged. The verdict columns",
    "  apply the same target to both backends.",
    "- **read errors / errors**: exceptions that reached the caller of `cache.get` / `cache.set`.",
    "- **wrong values**: reads that returned a version older than the newest version this",
    "  process had been acknowledged for that key when the read started (a `set` is",
    "  acknowledged when it returns without raising: failing open, hacache's `set` returns",
    "  normally even when nothing was stored, so a dropped write counts as acknowledged), or,",
    "  except failing open, nothing at all: every key is written before the load, without",
    "  expiry. Each key has one writer thread, so its versions are acknowledged in order.",
    "  Counted over the whole run, before the kill too (replica reads lag).",
    "- **misses** (failing open): reads that returned nothing; not wrong, counted apart.",
    "- **longest read gap**: the longest time a reader thread (a thread that only reads) went",
    "  without a read returning (whatever it returned: values are judged apart), from its last",
    f"  read before the kill to {GAP_TAIL:g} s after the first `+switch-master` (after SIGCONT",
    "  when pausing); later gaps, with nothing failing, are the machine's and only reported",
    "  (*to the end of the load*). *Process-wide*: counting every thread's reads (writer threads",
    "  read their own writes). *Before the kill*: the longest reader gap before it, the noise.",
    "- **writes resumed**: end of the longest stretch without a successful `set` after the kill,",
    "  against the first `+switch-master` (negative: the client found the new master first).",
    "- **other shards** (three shards): keys on the shards whose master was not killed. p99",
    "  latency per call before the kill, during the failover (kill to first `+switch-master` +",
    f"  {DURING_TAIL:g} s) and after; the target allows {LATENCY_FACTOR:g} x the p99 before +",
    f"  {LATENCY_SLACK_MS:g} ms, as p99 wanders with the machine's load (see the load average",
    f"  above). *Calls over {SLOW * 1000:.0f} ms*: a call that waited for a socket timeout or",
    "  for Sentinel; the machine's own stalls stay well under that. A thread blocked on the",
    "  killed shard delays its next call but not that call's latency: *calls per second* shows",
    "  it.",
    "- django-redis has no sharded Sentinel client: with three shards the harness gives it one",
    "  `SentinelClient` alias per shard and routes key *i* to shard *i* mod 3.",
]


# --------------------------------------------------------------------------- plot


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels sharing time since the kill: p99 latency per 50 ms, and counts per 50 ms of
    read errors, write errors and wrong values. With several shards, the other shards' lines
    are drawn in full and the killed shard's faintly."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(12, 7.5), dpi=100, gridspec_kw={"height_ratios": [3, 2]}
    )
    for key in BACKENDS:
        color = COLORS[key]
        for group, s in report["series"][key].items():
            faint = group == KILLED
            name = LABELS[key] if group == ALL else f"{LABELS[key]}, {group}"
            style = {"color": color, "lw": 0.8 if faint else 1.2, "alpha": 0.5 if faint else 1.0}
            top.plot(s["t"], s["read_p99_ms"], ls=":" if faint else "-", label=f"{name}: get",
                     **style)  # fmt: skip
            if not faint:
                top.plot(s["t"], s["write_p99_ms"], ls="--", label=f"{name}: set", **style)
            for field, ls in (("read_errors", "-"), ("write_errors", "--"), ("wrong", ":")):
                if any(s[field]) or (field == "read_errors" and not faint):  # zero is news
                    label = f"{name}: {field.replace('_', ' ')}"
                    bottom.step(s["t"], s[field], where="mid", ls=ls, label=label, **style)
            if s["slow_ops"] and not faint:
                starts, lats = [o[0] for o in s["slow_ops"]], [o[1] for o in s["slow_ops"]]
                ends = [a + b / 1000 for a, b in zip(starts, lats, strict=True)]
                top.hlines(lats, starts, ends, color=color, lw=3, alpha=0.35,
                           label=f"{name}: call > {SLOW * 1000:.0f} ms, start to end")  # fmt: skip
    top.set_yscale("log")
    top.set_ylabel("p99 latency per 50 ms (ms, log)")
    bottom.set_ylabel("per 50 ms")
    c, t = report["config"], report["timeline_ms"]
    paused = c["mode"] == "pause"
    bottom.set_xlabel(f"seconds since the master was {'paused (SIGSTOP)' if paused else 'killed'}")
    marks = [(0.0, "red", " SIGSTOP" if paused else " kill -9")]
    for n, item in enumerate(report["switches"]):
        label = " +switch-master" if n == 0 else f" +switch-master #{n + 1}"
        marks.append((item["first_ms"] / 1000, "green", label))
    if t.get("resumed") is not None:
        marks.append((t["resumed"] / 1000, "purple", " SIGCONT"))
    for x, color, text in marks:
        for ax in (top, bottom):
            ax.axvline(x, color=color, lw=1)
        top.text(x, 0.02, text, color=color, transform=top.get_xaxis_transform(), va="bottom")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=7, ncol=4)
    bottom.legend(loc="upper right", fontsize=7, ncol=2)
    totals = ", ".join(
        f"{LABELS[k]} {g['read_errors']:,} / {g['write_errors']:,} / {g['wrong_values']:,}"
        for k, g in ((k, report["backends"][k]["groups"][ALL]) for k in BACKENDS)
    )
    fig.suptitle(
        f"{report['scenario']}: {report['title']}; Sentinel down-after {c['down_after_ms']} ms\n"
        f"read errors / write errors / wrong values reaching the caller: {totals}",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    # The PNG is committed: a 128-colour palette keeps it to a fraction of the RGBA size.
    from PIL import Image

    with Image.open(buffer) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MAXCOVERAGE)
        small.save(path, optimize=True)
