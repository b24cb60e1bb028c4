#!/usr/bin/env python3
"""Turn load-test results into the head-to-head table, BENCHMARKS.md and the PNG plots.

    python loadtests/report.py                    # from the latest full run in loadtests/results/
    python loadtests/report.py loadtests/results/20250101T000000Z

Regenerates ``BENCHMARKS.md`` and ``loadtests/plots/*.png`` from one run's ``summary.json`` (so
every ratio in it was measured in that one run), plus the latest micro-benchmark results in
``benchmarks/results/`` when those files exist. ``run.py`` uses the same functions to print its
table and to write ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Run as a script: make loadtests importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.backends import BACKENDS, BASELINE

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "loadtests" / "results"
PLOTS_DIR = REPO / "loadtests" / "plots"
MARKDOWN = REPO / "BENCHMARKS.md"
MICRO_DIR = REPO / "benchmarks" / "results"
NEAR, SHARD = "hacache-near", "django-redis-shard"
TARGET_SPEEDUP = 1.3
LATENCIES = ("p50_ms", "p95_ms", "p99_ms")
ENDPOINT_ORDER = (
    "GET /item/[key]",
    "POST /item/[key]",
    "GET /cached/",
    "GET /",
    "GET /fragments/",
    "GET /session/",
    "GET /counter/",
)


# --------------------------------------------------------------------------- numbers


def _median(values: Iterable[float]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one back-end as one: medians of rates and percentiles, sums of counts."""
    out = dict(runs[-1])
    out["usage_row"] = _combine_usage([_usage_row(r) for r in runs])
    if len(runs) == 1:
        return out
    out["total"] = _combine_stats([r["total"] for r in runs])
    names = {name for r in runs for name in r["endpoints"]}
    out["endpoints"] = {
        n: _combine_stats([r["endpoints"][n] for r in runs if n in r["endpoints"]]) for n in names
    }
    checks: dict[str, int] = {}
    for r in runs:
        for key, value in r["checks"].items():
            checks[key] = checks.get(key, 0) + value
    out["checks"] = checks
    out["warmup_failures"] = sum(r.get("warmup_failures", 0) for r in runs)
    out["problems"] = [p for r in runs for p in r["problems"]]
    out["server_errors"] = [e for r in runs for e in r["server_errors"]]
    out["warmup_server_errors"] = [e for r in runs for e in r.get("warmup_server_errors", [])]
    exceptions: dict[str, int] = {}
    for r in runs:
        for line, count in (r.get("server_exceptions") or {}).items():
            exceptions[line] = exceptions.get(line, 0) + count
    out["server_exceptions"] = exceptions
    out["cpu_warning"] = any(r["cpu_warning"] for r in runs)
    out["locust_log_cpu_warning"] = any(r["locust_log_cpu_warning"] for r in runs)
    return out


def _combine_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    combined = {
        k: _median(s[k] for s in stats) for k in stats[0] if k not in ("requests", "failures")
    }
    combined["requests"] = sum(s["requests"] for s in stats)
    combined["failures"] = sum(s["failures"] for s in stats)
    return combined


def _combine_usage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the rounds' figures; shard shares from the commands of all rounds together."""
    per_shard = ("shard_share", "shard_commands")
    out: dict[str, Any] = {k: _median(r[k] for r in rows) for k in rows[0] if k not in per_shard}
    commands: dict[str, int] = {}
    for row in rows:
        for shard, count in row["shard_commands"].items():
            commands[shard] = commands.get(shard, 0) + count
    total = sum(commands.values())
    out["shard_commands"] = commands
    out["shard_share"] = {k: v / total for k, v in commands.items()} if total else {}
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def _usage_row(result: dict[str, Any]) -> dict[str, Any]:
    """CPU per party and Redis work, from one round's samples.

    ``server_us_per_request`` (gunicorn + Redis CPU per request served) is the cost of a request
    to the servers, independent of how much CPU the load generator took.
    """
    usage = result.get("usage") or {}
    cpu = usage.get("cpu_cores", {})
    shards = usage.get("shards", {})
    commands = sum(s["commands"] for s in shards.values())
    window = usage.get("to", 0) - usage.get("from", 0)
    rate = result["total"]["rps"]
    server = (cpu["gunicorn"] + cpu["redis"]) if "gunicorn" in cpu and "redis" in cpu else None
    return {
        "cpu_locust": cpu.get("locust"),
        "cpu_gunicorn": cpu.get("gunicorn"),
        "cpu_redis": cpu.get("redis"),
        "cpu_runner": cpu.get("runner"),
        "cpu_other": cpu.get("other"),
        "machine_busy": usage.get("machine_busy"),
        "server_us_per_request": 1e6 * server / rate if server is not None and rate else None,
        # Redis counters cover the sampler's bracket, a little wider than the measured window.
        "redis_commands_per_request": (commands / window) / rate if window and rate else None,
        "shard_commands": {k: v["commands"] for k, v in shards.items()},
        "shard_share": {k: v["commands"] / commands for k, v in shards.items()} if commands else {},
    }


def summarize(
    settings: dict[str, Any], machine: dict[str, Any], rounds: list[list[dict[str, Any]]]
) -> dict[str, Any]:
    """The whole run as one JSON document: settings, machine, table, targets and raw rounds."""
    by_backend: dict[str, list[dict[str, Any]]] = {}
    for results in rounds:
        for result in results:
            by_backend.setdefault(result["backend"], []).append(result)
    backends = {
        name: _combine(by_backend[name]) for name in settings["backends"] if name in by_backend
    }
    table = head_to_head(backends)
    problems = []
    for name, result in backends.items():
        counted: dict[str, int] = {}
        for problem in result["problems"]:
            counted[problem] = counted.get(problem, 0) + 1
        rounds_run = len(by_backend[name])
        problems += [
            f"{name}: {p}" + (f" (in {n} of {rounds_run} rounds)" if rounds_run > 1 else "")
            for p, n in counted.items()
        ]
    return {
        "kind": "hacache-loadtest",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "machine": machine,
        "table": table,
        "endpoints": endpoint_table(backends),
        "targets": targets(backends),
        "problems": problems,
        "cpu_warning": any(
            b["cpu_warning"] or b["locust_log_cpu_warning"] for b in backends.values()
        ),
        "backends": backends,
        "rounds": rounds,
    }


def head_to_head(backends: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per back-end: throughput, latency, errors, and ratios to Django's RedisCache."""
    base = backends.get(BASELINE, {}).get("total")
    rows = []
    for name, result in backends.items():
        total = result["total"]
        checks = result["checks"]
        item_reads = checks.get("item_hits", 0) + checks.get("item_misses", 0)
        sessions = checks.get("session_ok", 0) + checks.get("session_stale", 0)
        row = {
            "backend": name,
            "label": BACKENDS[name].label if name in BACKENDS else name,
            "rps": total["rps"],
            **{k: total[k] for k in LATENCIES},
            "requests": total["requests"],
            "failures": total["failures"],
            "error_rate": _ratio(total["failures"], total["requests"])
            if total["requests"]
            else 0.0,
            "rps_vs_django": _ratio(total["rps"], base["rps"]) if base else None,
            **{
                f"{k.removesuffix('_ms')}_vs_django": _ratio(total[k], base[k]) if base else None
                for k in LATENCIES
            },
            "item_hit_ratio": _ratio(checks.get("item_hits", 0), item_reads)
            if item_reads
            else None,
            "session_checks": sessions,
            "session_stale": checks.get("session_stale", 0),
            "server_errors": len(result["server_errors"]),
            "cpu_warning": bool(result["cpu_warning"] or result["locust_log_cpu_warning"]),
            **result["usage_row"],
        }
        rows.append(row)
    base_cost = next((r["server_us_per_request"] for r in rows if r["backend"] == BASELINE), None)
    for row in rows:
        cost = row["server_us_per_request"]
        row["server_cost_vs_django"] = cost / base_cost if cost and base_cost else None
    return rows


def endpoint_table(backends: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per endpoint and back-end: rate and latency percentiles."""
    names = {n for b in backends.values() for n in b["endpoints"]}
    order = [n for n in ENDPOINT_ORDER if n in names] + sorted(names - set(ENDPOINT_ORDER))
    rows = []
    for endpoint in order:
        row: dict[str, Any] = {"endpoint": endpoint}
        for name, result in backends.items():
            stats = result["endpoints"].get(endpoint)
            if stats:
                row[name] = {k: stats[k] for k in ("rps", "requests", "failures", *LATENCIES)}
        rows.append(row)
    return rows


def targets(backends: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goals, judged on this run's numbers."""
    found: list[dict[str, Any]] = []
    near, base, shard = backends.get(NEAR), backends.get(BASELINE), backends.get(SHARD)
    if near and base:
        speedup = _ratio(near["total"]["rps"], base["total"]["rps"])
        p99 = (near["total"]["p99_ms"], base["total"]["p99_ms"])
        found.append(
            {
                "target": f"hacache + near-cache serves >= {TARGET_SPEEDUP}x the requests/s of "
                "Django's RedisCache at no higher p99",
                "value": f"{speedup:.2f}x requests/s; p99 {p99[0]:.1f} ms vs {p99[1]:.1f} ms",
                "met": speedup >= TARGET_SPEEDUP and p99[0] <= p99[1],
            }
        )
    if near and shard:
        losses = []
        a, b = near["total"], shard["total"]
        if a["rps"] <= b["rps"]:
            losses.append(f"total requests/s {a['rps']:.0f} vs {b['rps']:.0f}")
        losses += [f"total {k} {a[k]:.1f} vs {b[k]:.1f}" for k in LATENCIES if a[k] > b[k]]
        for endpoint, stats in near["endpoints"].items():
            other = shard["endpoints"].get(endpoint)
            if not other:
                continue
            if stats["rps"] <= other["rps"]:
                losses.append(f"{endpoint} requests/s {stats['rps']:.0f} vs {other['rps']:.0f}")
            for k in ("p50_ms", "p99_ms"):
                if stats[k] > other[k]:
                    losses.append(f"{endpoint} {k} {stats[k]:.1f} vs {other[k]:.1f}")
        found.append(
            {
                "target": "hacache + near-cache beats django-redis's ShardClient on every row "
                "(total and per endpoint: more requests/s, no higher p50 and p99)",
                "value": "; ".join(losses) if losses else "wins every row",
                "met": not losses,
            }
        )
    steady = {
        name: (b["total"]["failures"], len(b["server_errors"])) for name, b in backends.items()
    }
    bad = {name: e for name, e in steady.items() if any(e)}
    warmup = {
        n: b.get("warmup_failures", 0) for n, b in backends.items() if b.get("warmup_failures")
    }
    value = ", ".join(f"{n}: {f} failed, {e} log errors" for n, (f, e) in bad.items())
    value = value or "none on any back-end"
    if warmup:
        value += "; during the warm-up: " + ", ".join(f"{n} {f} failed" for n, f in warmup.items())
    found.append(
        {
            "target": "no errors in steady state (failed requests, server error lines)",
            "value": value,
            "met": not bad,
        }
    )
    return found


# --------------------------------------------------------------------------- text


def _fmt(value: Any, spec: str = ".1f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def one_line(result: dict[str, Any]) -> str:
    total = result["total"]
    return (
        f"{total['rps']:.0f} req/s, p50 {total['p50_ms']:.1f} ms, p99 {total['p99_ms']:.1f} ms, "
        f"{total['failures']} failed of {total['requests']}"
        + (f"; PROBLEMS: {', '.join(result['problems'])}" if result["problems"] else "")
    )


def _grid(header: list[str], rows: list[list[str]], right: Iterable[int] = ()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    right = set(right)

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _table_cells(row: dict[str, Any]) -> list[str]:
    return [
        _fmt(row["rps"], ",.0f"),
        _fmt(row["p50_ms"], ".1f"),
        _fmt(row["p95_ms"], ".1f"),
        _fmt(row["p99_ms"], ".1f"),
        _fmt(100 * row["error_rate"], ".2f", "%"),
        _fmt(row["rps_vs_django"], ".2f", "x"),
        _fmt(row["p99_vs_django"], ".2f", "x"),
    ]


TABLE_HEADER = ["req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "req/s vs Django", "p99 vs Django"]


USAGE_HEADER = [
    "gunicorn",
    "Redis",
    "locust",
    "other",
    "busy",
    "server µs/req",
    "vs Django",
    "Redis cmds/req",
    "item hits",
    "stale sessions",
]


def _pct(value: float | None, spec: str = ".0f") -> str:
    return _fmt(None if value is None else 100 * value, spec, "%")


def usage_cells(row: dict[str, Any]) -> list[str]:
    return [
        _fmt(row["cpu_gunicorn"], ".2f"),
        _fmt(row["cpu_redis"], ".2f"),
        _fmt(row["cpu_locust"], ".2f"),
        _fmt(row["cpu_other"], ".2f"),
        _pct(row["machine_busy"]),
        _fmt(row["server_us_per_request"], ",.0f"),
        _fmt(row.get("server_cost_vs_django"), ".2f", "x"),
        _fmt(row["redis_commands_per_request"], ".2f"),
        _pct(row["item_hit_ratio"], ".1f"),
        f"{row['session_stale']} of {row['session_checks']:,}",
    ]


def text_report(summary: dict[str, Any]) -> str:
    """What run.py prints at the end."""
    rows = [[r["backend"], *_table_cells(r)] for r in summary["table"]]
    parts = [_grid(["backend", *TABLE_HEADER], rows, right=range(1, 8))]
    usage = [[r["backend"], *usage_cells(r)] for r in summary["table"]]
    parts.append(
        f"\nCPU in cores (of {summary['machine'].get('cpu_count')}), server CPU and Redis "
        "commands per request, checks:\n"
        + _grid(["backend", *USAGE_HEADER], usage, right=range(1, len(USAGE_HEADER) + 1))
    )
    if summary["cpu_warning"]:
        parts.append(
            "\nWARNING: locust reported CPU above 90%: the load generator was a bottleneck."
        )
    else:
        parts.append("\nlocust never reported CPU above 90% (the load generator kept up).")
    parts.append("\nTargets:")
    parts += [
        f"  [{'MET' if t['met'] else 'NOT MET'}] {t['target']}: {t['value']}"
        for t in summary["targets"]
    ]
    if summary["problems"]:
        parts.append("\nPROBLEMS:\n" + "\n".join(f"  {p}" for p in summary["problems"]))
    parts.append(f"\nResults: {summary['results_dir']}/summary.json")
    return "\n".join(parts)


# --------------------------------------------------------------------------- plots


def plot(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Throughput and latency-percentile bar charts, small enough to commit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary["table"]
    labels = [r["label"] for r in rows]
    colours = ["#1b7837" if r["backend"].startswith("hacache") else "#7f7f7f" for r in rows]
    caption = (
        f"{summary['settings']['users']} users, {summary['settings']['workers']} gunicorn workers, "
        f"{summary['settings']['rounds']} x {summary['settings']['duration']:g} s per back-end, "
        f"{summary['machine'].get('cpu_count')} CPUs"
        + (", locust on its own CPU" if summary["settings"].get("pin") else "")
    )
    paths = []

    fig, ax = plt.subplots(figsize=(7, 2.8), dpi=100)
    ypos = range(len(rows))[::-1]
    bars = ax.barh(list(ypos), [r["rps"] for r in rows], color=colours)
    for bar, row in zip(bars, rows, strict=True):
        ratio = row["rps_vs_django"]
        note = f" {row['rps']:,.0f}/s" + (f"  ({ratio:.2f}x Django)" if ratio else "")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, note, va="center", fontsize=8)
    ax.set_yticks(list(ypos), labels, fontsize=9)
    ax.set_xlabel("requests/s (higher is better)", fontsize=9)
    ax.set_xlim(0, max(r["rps"] for r in rows) * 1.45)
    ax.set_title(f"testproject throughput per cache back-end\n{caption}", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    paths.append(out_dir / "throughput.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    width = 0.8 / len(rows)
    shades = ["#1b7837", "#5aae61", "#7f7f7f", "#bababa", "#2166ac", "#92c5de"]
    for i, row in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(LATENCIES))]
        ax.bar(xs, [row[k] for k in LATENCIES], width, label=row["label"], color=shades[i % 6])
    ax.set_xticks(range(len(LATENCIES)), ["p50", "p95", "p99"], fontsize=9)
    ax.set_ylabel("ms (lower is better)", fontsize=9)
    ax.set_title(f"Response time percentiles, all requests\n{caption}", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    paths.append(out_dir / "latency.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- markdown


def _md_table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _micro_sections() -> list[str]:
    """The latest micro-benchmark results, if the scripts have been run on this checkout."""
    lines: list[str] = []
    backends_json = MICRO_DIR / "backends.json"
    if backends_json.exists():
        data = json.loads(backends_json.read_text())
        columns = [
            a for a in ("hacache", "hacache_1", "django", "django_redis", "django_redis_shard")
        ]
        names = {
            "hacache": "hacache, 3 shards",
            "hacache_1": "hacache, 1 server",
            "django": "Django `RedisCache`",
            "django_redis": "django-redis",
            "django_redis_shard": "django-redis `ShardClient`, 3 shards",
        }
        ratio_labels = [r for r in ("hc/dj", "hc/dr", "hc/drs")]
        rows = []
        for workload, per_alias in data["results"].items():
            cells = [f"`{workload}`"]
            cells += [_fmt(per_alias.get(a, {}).get("ops_per_s"), ",.0f", "/s") for a in columns]
            cells += [
                _fmt(data.get("ratios", {}).get(workload, {}).get(r), ".1f", "x")
                for r in ratio_labels
            ]
            rows.append(cells)
        m = data.get("machine", {})
        stamp = datetime.fromtimestamp(backends_json.stat().st_mtime, timezone.utc)
        lines += [
            "### Cache calls alone: `benchmarks/backends.py`",
            "",
            "No HTTP: every back-end called in one process on three local shards, interleaved in "
            "short slices, median over rounds (see the script's docstring). From "
            f"`benchmarks/results/backends.json` ({stamp:%Y-%m-%d %H:%M} UTC; {m.get('cpu_count')} "
            f"CPUs, {m.get('python')}, Django {m.get('django')}, redis-py {m.get('redis_py')}, "
            f"Redis {m.get('redis_server')}; hacache commit `{str(m.get('hacache_commit'))[:8]}`"
            f"{', dirty' if m.get('hacache_dirty') else ''}). Ratios are ops/s of hacache on 3 "
            "shards over Django `RedisCache` (hc/dj), django-redis (hc/dr) and `ShardClient` "
            "(hc/drs).",
            "",
            *_md_table(
                ["workload", *(names[a] for a in columns), *ratio_labels],
                rows,
            ),
            "",
        ]
        verdicts = data.get("targets") or []
        if verdicts:
            lines += ["Its own targets: " + "; ".join(
                f"{t['workload']} {t['ratio']} >= {t['minimum']:g}: {t['value']:.2f} "
                f"({t['verdict']})" for t in verdicts
            ) + ".", ""]  # fmt: skip
    near_json = MICRO_DIR / "nearcache.json"
    if near_json.exists():
        d = json.loads(near_json.read_text())
        stamp = datetime.fromtimestamp(near_json.stat().st_mtime, timezone.utc)
        rows = [
            ["`get`, Django `LocMemCache`", _fmt(d.get("locmem_get_us"), ".2f", " µs")],
            [
                "`get`, hacache near-cache hit",
                _fmt(d.get("near_hit_get_us"), ".2f", " µs")
                + f" ({_fmt(d.get('near_vs_locmem'), '.2f', 'x')} `LocMemCache`)",
            ],
            [
                "`get`, hacache remote hit",
                _fmt(d.get("remote_hit_get_us"), ".0f", " µs")
                + f" ({_fmt(d.get('remote_vs_near'), '.0f', 'x')} the near hit)",
            ],
            [
                f"write in one process → eviction in another ({d.get('writes')} writes)",
                f"p50 {_fmt(d.get('delay_ms_p50'), '.2f')} ms, "
                f"p99 {_fmt(d.get('delay_ms_p99'), '.2f')} ms, "
                f"max {_fmt(d.get('delay_ms_max'), '.1f')} ms",
            ],
        ]
        lines += [
            "### Near-cache alone: `benchmarks/nearcache.py`",
            "",
            f"From `benchmarks/results/nearcache.json` ({stamp:%Y-%m-%d %H:%M} UTC).",
            "",
            *_md_table(["measure", "result"], rows),
            "",
        ]
    if not lines:
        lines = [
            "No results in `benchmarks/results/` yet: run `python benchmarks/backends.py` "
            "(~2 min) and `python benchmarks/nearcache.py` (~10 s), then this report again.",
            "",
        ]
    return lines


def markdown(
    summary: dict[str, Any],
    plots: list[Path],
    failover: dict[str, Any] | None = None,
    failover_plot: Path | None = None,
) -> str:
    s, m = summary["settings"], summary["machine"]
    rows = summary["table"]
    names = [r["backend"] for r in rows]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python loadtests/report.py` from one run's summary.json; edits are "
        "overwritten. -->",
        "",
        "Two kinds of numbers: a **load test** of the demo site (`testproject`) served by gunicorn "
        "and driven by locust, where each cache call is one part of a real Django request, and "
        "**micro-benchmarks** of the cache calls alone. All ratios in a table were measured in "
        "the same run, on the same Redis servers.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "python loadtests/run.py --report      # load test: all four back-ends, then this file",
        "python loadtests/report.py            # this file again from the latest full run",
        "python loadtests/run.py --quick       # smoke run: 2 back-ends x 5 s",
        "python benchmarks/backends.py         # micro-benchmarks (~2 min), then report.py",
        "python benchmarks/nearcache.py        # near-cache micro-benchmark (~10 s)",
        "```",
        "",
        f"This file comes from: `{' '.join(s['command'])}` "
        f"(results in `{_relative(summary['results_dir'])}/`, gitignored).",
        "",
        "## Machine",
        "",
        *_md_table(
            ["", ""],
            [
                ["CPU", f"{m.get('cpu_count')} x {m.get('cpu_model')}"],
                ["memory", f"{m.get('memory_gb')} GB"],
                ["OS", str(m.get("platform"))],
                ["Python", str(m.get("python"))],
                ["Django", str(m.get("django"))],
                ["redis-py / hiredis", f"{m.get('redis_py')} / {m.get('hiredis')}"],
                ["django-redis", str(m.get("django_redis"))],
                ["Redis server", str(m.get("redis_server"))],
                ["locust / gunicorn", f"{m.get('locust')} / {m.get('gunicorn')}"],
                [
                    "hacache",
                    f"commit `{str(m.get('hacache_commit'))[:8]}`"
                    + (" with uncommitted changes in `hacache/`" if m.get("hacache_dirty") else ""),
                ],
                [
                    "load average",
                    f"{_loads(m.get('load_average_before'))} before, "
                    f"{_loads(m.get('load_average_after'))} after",
                ],
            ],
            right_from=99,
        ),
        "",
        "Everything runs on this one machine (three `redis-server` processes, gunicorn and "
        "locust), over loopback, so absolute numbers are small and the ratios are what to "
        "compare. The CPU table below shows who used the cores.",
        "",
        "## Load test: the demo site, head to head",
        "",
        f"{_sentence(summary['scenario']['description'])}. Back-ends, one after the other on "
        "the same servers (flushed in between), each with a fresh gunicorn:",
        "",
        *[
            f"- **{r['label']}** (`{r['backend']}`): {BACKENDS[r['backend']].description}."
            for r in rows
        ],
        "",
        f"Load: {s['users']} locust users (FastHttpUser, no think time), gunicorn with "
        f"{s['workers']} sync workers, {s['warmup']:g} s warm-up then {s['duration']:g} s "
        f"measured per back-end, {s['rounds']} round(s). Users: `Reader` (weight 3: `/cached/`, "
        "`/`, `/fragments/?n=" + str(s["fragments"]) + "`, item reads) and `Member` (weight 1: "
        "`/session/`, `/counter/`, `/cached/`, item traffic). Item traffic is "
        f"{100 * (1 - s['write_ratio']):g}% GET / {100 * s['write_ratio']:g}% POST over "
        f"{s['key_space']:,} prefilled keys of {s['value_bytes']} bytes with Zipf(s = "
        f"{s['zipf_s']:g}) popularity{_zipf_note(summary)} (YCSB workload B), seed {s['seed']}.",
        "",
        _pin_note(s),
        "",
        *_md_table(["back-end", *TABLE_HEADER], [[r["label"], *_table_cells(r)] for r in rows]),
        "",
        "Each figure is the median over the rounds. Latencies are exact (every request timed, "
        "nearest-rank percentiles over the measured window; locust's own CSV rounds to whole "
        "milliseconds). Errors are failed requests over all measured requests.",
        "",
    ]
    lines += [f"![{p.stem}]({_relative(p)})" for p in plots]
    lines += ["", "### Per endpoint", ""]
    ep_rows = []
    for row in summary["endpoints"]:
        cells = [f"`{row['endpoint']}`"]
        for name in names:
            st = row.get(name)
            cells.append(
                f"{st['rps']:,.0f}/s · {st['p50_ms']:.1f} / {st['p99_ms']:.1f} ms" if st else "-"
            )
        ep_rows.append(cells)
    lines += [
        "Requests/s · p50 / p99.",
        "",
        *_md_table(["endpoint", *(r["label"] for r in rows)], ep_rows),
        "",
        "### Where the CPU went, and what Redis did",
        "",
        "CPU in cores (1.00 = one whole core) over the measured window, from the processes' CPU "
        "time; `busy` is the whole machine. Redis commands per HTTP request count every command "
        "all shards processed (pub/sub and heartbeats included).",
        "",
    ]
    usage_rows = [
        [
            r["label"],
            *usage_cells(r),
            " / ".join(f"{100 * v:.0f}%" for _, v in sorted(r["shard_share"].items())) or "-",
        ]
        for r in rows
    ]
    lines += [
        *_md_table(["back-end", *USAGE_HEADER, "Redis commands per shard"], usage_rows),
        "",
        "Commands per shard are over all rounds. Sessions' keys are random and `cache_page`'s "
        "include the server's port, which changes every round, so hot keys land on different "
        "shards from one round to the next.",
        "",
        "`other` is CPU used by processes outside the test (the machine is shared): when it is "
        "high, compare that run's ratios with care. `server µs/req` is the CPU gunicorn and "
        "Redis spent per request served (`vs Django`: that cost over Django's RedisCache's, "
        "lower is better): the cost of a request, whoever else used the machine.",
        "",
        "A stale session read is a `/session/` response whose counter did not go up by one: the "
        "visitor's previous request, served by another gunicorn worker, had stored a newer "
        "session that this worker did not see. Only a near-cache can cause one (its "
        "documented window between a write and the other processes' invalidation); they are "
        "counted, not failed.",
        "",
    ]
    lines += _load_notes(summary)
    lines += _failure_notes(summary)
    lines += ["### Targets", ""]
    lines += [
        f"- **{'met' if t['met'] else 'NOT met'}**: {t['target']}. Measured: {t['value']}."
        for t in summary["targets"]
    ]
    if summary["problems"]:
        lines += ["", "Problems in this run: " + "; ".join(summary["problems"]) + "."]
    if failover:
        lines += ["", *failover_section(failover, failover_plot)]
    lines += ["", "## Micro-benchmarks", "", *_micro_sections()]
    return "\n".join(lines).rstrip() + "\n"


def _load_notes(summary: dict[str, Any]) -> list[str]:
    """Sentences computed from the run: the load generator, noise, and why ratios shrink."""
    rows = {r["backend"]: r for r in summary["table"]}
    max_noise = summary["settings"].get("max_noise", 0.1)
    lines = []
    if summary["cpu_warning"]:
        lines.append(
            "**locust reported CPU above 90%** in at least one measurement: the load generator "
            "was a bottleneck there, so those numbers understate the servers. Use fewer users."
        )
    else:
        top = max((r["cpu_locust"] or 0.0) for r in rows.values())
        lines.append(
            "locust never reported its CPU-above-90% warning (its busiest measurement used "
            f"{top:.2f} of a core): the load generator was not the bottleneck."
        )
    measurements = [r for results in summary["rounds"] for r in results]
    noise = [r.get("noise_cores") or 0.0 for r in measurements]
    noisy = [r for r in measurements if (r.get("noise_cores") or 0.0) > max_noise]
    if noisy:
        lines.append(
            "**Noisy measurements** (other processes busy even after the retries): "
            + ", ".join(
                f"{r['backend']} round {r['round']} ({r['noise_cores']:.2f} cores)" for r in noisy
            )
            + ". The servers' CPU is the bottleneck, so such rows are understated: compare "
            "`server µs/req`, which is less sensitive to sharing, as well."
        )
    elif noise:
        lines.append(
            f"Other processes used at most {max(noise):.2f} cores during any measurement (a "
            f"measurement over {max_noise:g} cores is retried, chosen by that noise alone)."
        )
    base, near = rows.get(BASELINE), rows.get(NEAR)
    if base and near and base["server_us_per_request"] and near["server_us_per_request"]:
        shared = not summary["settings"].get("pin")
        locust_us = 1e6 * near["cpu_locust"] / near["rps"] if near["cpu_locust"] else None
        lines.append(
            "Why the site-level ratios are smaller than the micro-benchmarks': per request "
            f"served, gunicorn and Redis used {base['server_us_per_request']:,.0f} µs of CPU "
            f"with Django's RedisCache and {near['server_us_per_request']:,.0f} µs with hacache "
            f"+ near-cache ({base['server_us_per_request'] / near['server_us_per_request']:.2f}x "
            "less). With the near-cache most cache reads are in-process hits of a few µs, so "
            "its figure is close to the floor set by Django, gunicorn (a new TCP connection per "
            "request with sync workers) and the kernel, which no back-end lowers; the back-ends "
            "differ only in what they add on top"
            + (
                f". Unpinned, locust also spent {locust_us:,.0f} µs per request on the same "
                "cores, which squeezes the ratios further"
                if shared and locust_us
                else ""
            )
            + ". The micro-benchmarks below measure the cache calls alone."
        )
    return [line for text in lines for line in (text, "")]


def _failure_notes(summary: dict[str, Any]) -> list[str]:
    """What failed, per back-end, including the warm-up (not measured, but never hidden)."""
    lines = []
    for name, result in summary["backends"].items():
        for when, kinds in (
            ("measured", result.get("failure_kinds") or {}),
            ("warm-up", result.get("warmup_failure_kinds") or {}),
        ):
            for kind, count in list(kinds.items())[:5]:
                lines.append(f"- {name}, {when}: {count} x `{kind}`")
        for exception, count in list((result.get("server_exceptions") or {}).items())[:5]:
            lines.append(f"- {name}, in the gunicorn log: {count} x `{exception}`")
    if not lines:
        return []
    return ["Failed requests:", "", *lines, ""]


def _zipf_note(summary: dict[str, Any]) -> str:
    for result in summary["backends"].values():
        shares = result.get("zipf_top_share") or {}
        if "10" in shares and "100" in shares:
            return (
                f": the top 10 keys get {100 * shares['10']:.0f}% of item requests, the top 100 "
                f"{100 * shares['100']:.0f}%"
            )
    return ""


def _pin_note(settings: dict[str, Any]) -> str:
    cpus = settings.get("cpus") or {}
    if settings.get("pin") and cpus.get("load") != cpus.get("servers"):
        return (
            f"CPUs: locust pinned to CPU {_cpu_list(cpus['load'])}, Redis and gunicorn to CPU "
            f"{_cpu_list(cpus['servers'])}, as if the clients were other machines (the load "
            "generator's CPU grows with every request served; sharing cores with it would "
            "squeeze every ratio towards 1). `--no-pin` lets everything share every CPU."
        )
    return "CPUs: not pinned; locust, Redis and gunicorn share every CPU."


def _cpu_list(cpus: list[int]) -> str:
    return ", ".join(str(c) for c in cpus)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _loads(values: list[float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "-"


def _relative(path: str | Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def latest_full_run(root: Path = RESULTS_DIR) -> Path:
    """Newest results directory of a full steady-state (not --quick) run that finished."""
    runs = sorted(
        p.parent
        for p in root.glob("*/summary.json")
        if not p.parent.name.endswith(("-quick", FAILOVER_SUFFIX))
    )
    if not runs:
        raise SystemExit(f"no full run in {root}; run `python loadtests/run.py` first")
    return runs[-1]


def latest_failover_run(root: Path = RESULTS_DIR) -> Path | None:
    """Newest failover-scenario results directory, if any."""
    runs = sorted(p.parent for p in root.glob(f"*{FAILOVER_SUFFIX}/summary.json"))
    return runs[-1] if runs else None


def write_report(
    results_dir: Path, markdown_path: Path = MARKDOWN, plots_dir: Path = PLOTS_DIR
) -> str:
    """Regenerate the plots and BENCHMARKS.md; returns what was written.

    The head-to-head comes from one steady-state run and the failover section from one failover
    run: given either kind, the latest run of the other kind fills in the rest.
    """
    given = json.loads((results_dir / "summary.json").read_text())
    failover_dir: Path | None
    if given.get("scenario", {}).get("name") == "failover":
        failover_dir, results_dir = results_dir, latest_full_run(results_dir.parent)
    else:
        failover_dir = latest_failover_run(results_dir.parent)
    failover = failover_summary(failover_dir) if failover_dir else None
    stored = json.loads((results_dir / "summary.json").read_text())
    # Recomputed from the raw rounds, so a report written by a newer report.py stays consistent.
    summary = {
        **stored,
        **summarize(
            settings=stored["settings"], machine=stored["machine"], rounds=stored["rounds"]
        ),
        "created": stored["created"],
    }
    failover_png = None
    try:
        plots = plot(summary, plots_dir)
        if failover:
            failover_png = plot_failover(failover, plots_dir)
    except ImportError:
        plots = []
        print(
            "matplotlib is not installed: BENCHMARKS.md is written without plots", file=sys.stderr
        )
    markdown_path.write_text(markdown(summary, plots, failover, failover_png))
    written = [markdown_path, *plots, *([failover_png] if failover_png else [])]
    return "wrote " + ", ".join(_relative(p) for p in written)


# --------------------------------------------------------------------------- failover


FAILOVER_SUFFIX = "-failover"  # run.py names a failover run's results directory so


def failover_timeline(result: dict[str, Any]) -> dict[str, Any]:
    """One back-end's failover run, per second: what a whole-window average would hide.

    Times are seconds after the measured window opened; ``promotion_s`` is from the kill.
    """
    start = result["measured_from"]
    events = {e["event"]: e["time"] for e in result.get("scenario_timeline", [])}
    kill, promoted = events.get("kill"), events.get("promoted")
    bins = result.get("bins", [])
    total = result["total"]
    after_kill = [b for b in bins if kill is not None and start + b["t"] + 1 > kill]
    return {
        "backend": result["backend"],
        "label": BACKENDS[result["backend"]].label
        if result["backend"] in BACKENDS
        else result["backend"],
        "rps": total["rps"],
        "requests": total["requests"],
        "failures": total["failures"],
        "error_rate": _ratio(total["failures"], total["requests"]) if total["requests"] else 0.0,
        "p50_ms": total["p50_ms"],
        "p99_ms": total["p99_ms"],
        "kill_s": kill - start if kill is not None else None,
        "promoted_s": promoted - start if promoted is not None else None,
        "promotion_s": promoted - kill if kill is not None and promoted is not None else None,
        "error_seconds": sum(1 for b in bins if b["failures"]),
        "worst_bin_p99_ms": max((b["p99_ms"] for b in after_kill), default=None),
        "failure_kinds": result.get("failure_kinds") or {},
        "problems": result.get("problems", []),
        "bins": bins,
    }


def failover_summary(results_dir: Path) -> dict[str, Any]:
    """A failover run's per-back-end timelines (its first round), for the report and JSON."""
    stored = json.loads((results_dir / "summary.json").read_text())
    first = stored["rounds"][0]
    return {
        "results_dir": stored.get("results_dir", str(results_dir)),
        "settings": stored["settings"],
        "description": stored.get("scenario", {}).get("description", "failover"),
        "backends": [failover_timeline(r) for r in first],
    }


def failover_text(summary: dict[str, Any]) -> str:
    """The per-second table run.py prints after a failover run."""
    parts = []
    for b in summary["backends"]:
        rows = [
            [
                _fmt(x["t"], ".0f"),
                str(x["requests"]),
                str(x["failures"]),
                _fmt(x["p50_ms"], ".1f"),
                _fmt(x["p99_ms"], ".1f"),
            ]
            for x in b["bins"]
        ]
        parts.append(
            f"\n{b['backend']}: killed at {_fmt(b['kill_s'], '.1f')} s, promoted at "
            f"{_fmt(b['promoted_s'], '.1f')} s ({_fmt(b['promotion_s'], '.1f')} s later); "
            f"{b['failures']} failed of {b['requests']} ({_pct(b['error_rate'], '.2f')}), "
            f"{b['rps']:.0f} req/s\n"
            + _grid(["second", "requests", "errors", "p50 ms", "p99 ms"], rows, range(5))
        )
    return "\n".join(parts)


def plot_failover(summary: dict[str, Any], out_dir: Path) -> Path:
    """p99 and errors per second for each back-end, with the kill and the promotion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    backends = summary["backends"]
    fig, axes = plt.subplots(
        len(backends), 1, figsize=(7, 2.1 * len(backends)), dpi=100, sharex=True, squeeze=False
    )
    for ax, b in zip(axes[:, 0], backends, strict=True):
        xs = [x["t"] + 0.5 for x in b["bins"]]
        ax.plot(xs, [x["p99_ms"] for x in b["bins"]], color="#2166ac", marker=".", label="p99")
        ax.set_yscale("log")
        ax.set_ylabel("p99 ms", fontsize=8, color="#2166ac")
        errors = ax.twinx()
        errors.bar(xs, [x["failures"] for x in b["bins"]], 0.8, color="#b2182b", alpha=0.5)
        errors.set_ylim(0, max([1, *(x["failures"] for x in b["bins"])]) * 1.1)
        errors.set_ylabel("errors/s", fontsize=8, color="#b2182b")
        for key, style, what in (("kill_s", "-", "kill"), ("promoted_s", "--", "promoted")):
            if b[key] is not None:
                ax.axvline(b[key], color="black", linestyle=style, linewidth=1, label=what)
        ax.set_title(
            f"{b['label']}: {b['failures']} errors of {b['requests']:,}, "
            f"promotion {_fmt(b['promotion_s'], '.1f', ' s')} after the kill",
            fontsize=9,
        )
        ax.tick_params(labelsize=8)
        errors.tick_params(labelsize=8)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    axes[-1, 0].set_xlabel("seconds into the measured window", fontsize=8)
    fig.tight_layout()
    path = out_dir / "failover.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def failover_section(summary: dict[str, Any], plot_path: Path | None) -> list[str]:
    """BENCHMARKS.md's failover section: totals, the failover's cost, and the plot."""
    s = summary["settings"]
    rows = [
        [
            b["label"],
            _fmt(b["rps"], ",.0f"),
            _fmt(b["p50_ms"], ".1f"),
            _fmt(b["p99_ms"], ".1f"),
            f"{b['failures']:,} ({_pct(b['error_rate'], '.2f')})",
            str(b["error_seconds"]),
            _fmt(b["promotion_s"], ".1f", " s"),
            _fmt(b["worst_bin_p99_ms"], ",.0f"),
        ]
        for b in summary["backends"]
    ]
    lines = [
        "## Load test: a master killed mid-run",
        "",
        f"From: `{' '.join(s['command'])}` (results in `{_relative(summary['results_dir'])}/`; "
        "per-second bins in each back-end's `stats.json` and in `summary.json`).",
        "",
        f"{_sentence(summary['description'])}. {s['users']} users, {s['workers']} gunicorn "
        f"workers, {s['warmup']:g} s warm-up then {s['duration']:g} s measured per back-end; the "
        "killed master is restarted (it rejoins as a replica) before the next back-end. "
        "Promotion is when the Sentinels first name the new master (polled every 50 ms).",
        "",
        *_md_table(
            [
                "back-end",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "seconds with errors",
                "promotion after kill",
                "worst 1-s p99 ms",
            ],
            rows,
        ),
        "",
    ]
    if plot_path:
        lines += [f"![failover]({_relative(plot_path)})", ""]
    kinds = [
        f"- {b['backend']}: {n} x `{k}`"
        for b in summary["backends"]
        for k, n in list(b["failure_kinds"].items())[:3]
    ]
    if kinds:
        lines += ["Failed requests:", "", *kinds, ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, help="a run's directory (default: latest)")
    parser.add_argument("--markdown", type=Path, default=MARKDOWN)
    parser.add_argument("--plots", type=Path, default=PLOTS_DIR)
    args = parser.parse_args(argv)
    results_dir = args.results or latest_full_run()
    print(write_report(results_dir, args.markdown, args.plots))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
