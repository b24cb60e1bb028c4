"""Smoke test of the load-test harness: ``loadtests/run.py --quick`` end to end, as people run it.

It starts real Redis shards, gunicorn and locust, so it checks what the numbers in BENCHMARKS.md
rest on: every back-end under test really served the whole request mix through the back-end it
claims to be, with no failed request, prefilled reads hitting, and nothing left running.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "loadtests" / "run.py"
QUICK_BACKENDS = ["hacache-near", "django"]
ENDPOINTS = {
    "GET /item/[key]",
    "POST /item/[key]",
    "GET /cached/",
    "GET /",
    "GET /fragments/",
    "GET /session/",
    "GET /counter/",
}
EXPECTED_BACKEND = {
    "hacache-near": "hacache.HACache",
    "django": "django.core.cache.backends.redis.RedisCache",
}
TIMEOUT = 90  # the quick run takes ~20 s; this only bounds a hang


def run_quick(results: Path) -> tuple[int, str]:
    """Run the quick comparison; on a hang, SIGTERM it so it stops what it started."""
    proc = subprocess.Popen(
        [sys.executable, str(RUN), "--quick", "--results-dir", str(results)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # run.py unwinds and stops Redis, gunicorn, locust
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        pytest.fail(f"run.py --quick did not finish in {TIMEOUT} s:\n{output}")
    return proc.returncode, output


def leftovers(marker: str) -> list[str]:
    """Live processes whose command line, directory or open files (a log) mention ``marker``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "open_files", "status"]):
        info = proc.info
        if proc.pid == os.getpid() or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        files = " ".join(f.path for f in info.get("open_files") or [])
        text = " ".join([*(info.get("cmdline") or []), info.get("cwd") or "", files])
        if marker in text:
            found.append(f"{info['pid']}: {text.strip()}")
    return found


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    results = tmp_path_factory.mktemp("loadtest") / "results"
    code, output = run_quick(results)
    summary_file = results / "summary.json"
    assert summary_file.exists(), f"no summary.json (exit {code}):\n{output}"
    return {
        "code": code,
        "output": output,
        "results": results,
        "summary": json.loads(summary_file.read_text()),
    }


def test_quick_run_passes_and_prints_the_table(quick_run: dict[str, Any]) -> None:
    summary, output = quick_run["summary"], quick_run["output"]
    assert quick_run["code"] == 0, output
    assert summary["problems"] == [], output
    assert summary["settings"]["quick"] is True
    assert summary["settings"]["backends"] == QUICK_BACKENDS
    assert "req/s vs Django" in output
    for name in QUICK_BACKENDS:
        assert f"\n{name} " in output, f"{name} missing from the printed table:\n{output}"


def test_table_has_one_sane_row_per_backend(quick_run: dict[str, Any]) -> None:
    table = quick_run["summary"]["table"]
    assert [row["backend"] for row in table] == QUICK_BACKENDS
    rows = {row["backend"]: row for row in table}
    for name, row in rows.items():
        assert row["requests"] > 100, f"{name} served almost nothing: {row}"
        assert row["rps"] > 0
        assert row["failures"] == 0, f"{name} failed requests: {row}"
        assert row["error_rate"] == 0.0
        latencies = [row["p50_ms"], row["p95_ms"], row["p99_ms"]]
        assert all(math.isfinite(v) and v > 0 for v in latencies), row
        assert latencies == sorted(latencies), f"{name} percentiles out of order: {latencies}"
        assert math.isclose(row["rps_vs_django"], row["rps"] / rows["django"]["rps"])
        assert math.isclose(row["p99_vs_django"], row["p99_ms"] / rows["django"]["p99_ms"])
    assert rows["django"]["rps_vs_django"] == 1.0


def test_every_backend_served_the_whole_mix_through_itself(quick_run: dict[str, Any]) -> None:
    summary, results = quick_run["summary"], quick_run["results"]
    for name in QUICK_BACKENDS:
        result = summary["backends"][name]
        served = {endpoint for endpoint, s in result["endpoints"].items() if s["requests"] > 0}
        assert served == ENDPOINTS, f"{name} did not serve the whole mix: {served}"
        assert result["warmup_failures"] == 0, result["warmup_failure_kinds"]
        checks = result["checks"]
        assert checks.get("item_hits", 0) > 0
        assert checks.get("item_misses", 0) == 0, f"{name}: prefilled item reads missed"
        assert checks.get("session_ok", 0) > 0
        assert checks.get("fragment_hits", 0) > 0
        # The server really ran on the back-end under test (caches.json is what it loaded).
        caches = json.loads((results / name / "caches.json").read_text())
        assert caches["default"]["BACKEND"] == EXPECTED_BACKEND[name]
        for artefact in ("locust_stats.csv", "locust.html", "stats.json", "gunicorn.log"):
            assert (results / name / artefact).exists(), f"{name}: no {artefact}"
        assert result["locust_aggregate"]["requests"] >= result["total"]["requests"]


def test_redis_saw_each_backends_own_placement(quick_run: dict[str, Any]) -> None:
    """hacache spreads commands over the 3 shards; Django's RedisCache uses shard 0 alone."""
    rows = {row["backend"]: row for row in quick_run["summary"]["table"]}
    near = rows["hacache-near"]["shard_share"]
    assert sorted(near) == ["shard0", "shard1", "shard2"]
    assert all(share > 0.05 for share in near.values()), near
    assert rows["django"]["shard_share"] == {"shard0": 1.0, "shard1": 0.0, "shard2": 0.0}
    assert rows["django"]["session_stale"] == 0  # only a near-cache can serve a stale session
    for row in rows.values():
        assert row["cpu_gunicorn"] > 0 and row["cpu_locust"] > 0
        assert row["redis_commands_per_request"] > 0


def test_nothing_is_left_running(quick_run: dict[str, Any]) -> None:
    assert leftovers(str(quick_run["results"])) == []
