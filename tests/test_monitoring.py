"""The shipped Prometheus rules and Grafana dashboard, checked by a real Prometheus.

promtool checks the rules and runs their unit tests (tests/monitoring/alerts_test.yml); a
``prometheus`` process started here scrapes a small HTTP server that serves one sample of every
hacache metric, evaluates the rules, and answers every dashboard panel's query.

Skipped where promtool or prometheus is missing, except under CI, which installs them
(scripts/lib.sh) and where a missing binary is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hacache.topology import free_port

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "hacache" / "monitoring"
RULES = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULE_TESTS = Path(__file__).resolve().parent / "monitoring" / "alerts_test.yml"
ALIAS = "default"
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
BUCKETS += (0.25, 0.5, 1.0)


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing under CI: scripts/lib.sh installs the prometheus package")
        pytest.skip(f"{name} not installed (Debian package prometheus; scripts/lib.sh installs it)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)


# promtool


def test_promtool_check_rules() -> None:
    result = run(binary("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests() -> None:
    result = run(binary("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M))
    tested = set(re.findall(r"^\s*alertname: (\w+)", RULE_TESTS.read_text(), re.M))
    assert len(alerts) == 10
    assert alerts <= tested, f"no promtool test for {sorted(alerts - tested)}"


def test_files_ship_as_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["hacache"]
    shipped = [p for p in MONITORING.iterdir() if p.suffix in (".yml", ".json")]
    assert {RULES, DASHBOARD} <= set(shipped)
    for path in shipped:
        relative = path.relative_to(ROOT / "hacache").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


# The dashboard's shape (no Grafana here: what an import needs, checked by hand)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def query_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_variables() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    alias = variables["alias"]
    assert alias["type"] == "query"
    assert alias["query"]["query"] == "label_values(hacache_calls_total, alias)"
    assert alias["datasource"]["uid"] == "${datasource}"
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]


def test_dashboard_panels_are_well_formed() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        x, y, w, h = (panel["gridPos"][k] for k in "xywh")
        assert x + w <= 24, panel["title"]
        mine = {(i, j) for i in range(x, x + w) for j in range(y, y + h)}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in query_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            if "hacache_" in target["expr"]:
                assert 'alias=~"$alias"' in target["expr"], panel["title"]


def test_dashboard_shows_every_alerts_quantity() -> None:
    """Each alert's quantity has a panel that draws its threshold."""
    titles = {p["title"]: p for p in query_panels()}
    expected = {
        "Mean latency per shard": 0.05,
        "p95 latency per shard": 0.1,
        "p99 latency per shard": 0.2,
        "Hit rate": 0.8,
        "Redis memory used / maxmemory": 0.8,
        "Invalidation lag p99 per shard": 1,
        "Errors per minute": 100,
        "Failovers in the last 10 minutes": 1,
    }
    for prefix, threshold in expected.items():
        (panel,) = [p for t, p in titles.items() if t.startswith(prefix)]
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[-1]["value"] == threshold, prefix
    assert "Shard up" in titles and "Circuit breakers" in titles


# A real Prometheus


class Exposition:
    """Text exposition of every hacache metric, one label set each. Counters and histogram
    counts grow by the same step at every scrape, so rates and ratios are known."""

    def __init__(self) -> None:
        self.scrapes = 0
        self.lock = threading.Lock()

    def render(self) -> str:
        with self.lock:
            self.scrapes += 1
            n = self.scrapes
        out: list[str] = []

        def family(name: str, kind: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} hacache test series")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{series} {value!r}" for series, value in samples)

        def labels(**kv: str) -> str:
            return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"

        a = labels(alias=ALIAS)
        shard = labels(alias=ALIAS, shard="shard0")
        server = labels(alias=ALIAS, shard="shard0", server="127.0.0.1:6379")
        op = labels(alias=ALIAS, op="get")
        family("hacache_calls_total", "counter", [(f"hacache_calls_total{op}", 100.0 * n)])
        family("hacache_hits_total", "counter", [(f"hacache_hits_total{op}", 90.0 * n)])
        family("hacache_misses_total", "counter", [(f"hacache_misses_total{op}", 10.0 * n)])
        # Errors: 1 a scrape, a scrape a second: 60 a minute, under the alert's 100.
        errors = labels(alias=ALIAS, op="get", error="ConnectionError")
        family("hacache_errors_total", "counter", [(f"hacache_errors_total{errors}", 1.0 * n)])
        # Latency: 100 calls a scrape, half within 1ms, all within 5ms, mean 2ms.
        self.histogram(
            out,
            "hacache_latency_seconds",
            labels(alias=ALIAS, shard="shard0", op="get")[1:-1],
            n,
            {0.001: 50, 0.0025: 90, 0.005: 100},
            total=0.2,
        )
        for event in ("hits", "misses", "fills", "evictions", "expirations", "invalidations"):
            name = f"hacache_near_{event}_total"
            family(name, "counter", [(f"{name}{a}", 1.0 * n)])
        for event in ("gap_flushes", "resubscribe_flushes"):
            name = f"hacache_near_{event}_total"
            family(name, "counter", [(f"{name}{a}", 1.0 * n)])
        family("hacache_near_entries", "gauge", [(f"hacache_near_entries{a}", 120.0)])
        family("hacache_near_bytes", "gauge", [(f"hacache_near_bytes{a}", 65536.0)])
        family(
            "hacache_near_untrusted_shards", "gauge", [(f"hacache_near_untrusted_shards{a}", 0.0)]
        )
        # Invalidation lag: 10 a scrape, all within 10ms.
        self.histogram(
            out, "hacache_invalidation_lag_seconds", shard[1:-1], n, {0.01: 10}, total=0.02
        )
        for name in ("replica_reads", "hedged_reads", "writes_dropped"):
            family(f"hacache_{name}_total", "counter", [(f"hacache_{name}_total{shard}", 1.0 * n)])
        # No failover (the alert would fire): the counter exists at 0, as a process creates it.
        family("hacache_failovers_total", "counter", [(f"hacache_failovers_total{shard}", 0.0)])
        family("hacache_dropped_writes", "gauge", [(f"hacache_dropped_writes{shard}", 3.0)])
        family("hacache_breaker_open", "gauge", [(f"hacache_breaker_open{server}", 0.0)])
        family("hacache_shard_up", "gauge", [(f"hacache_shard_up{shard}", 1.0)])
        family("hacache_ejected_shards", "gauge", [(f"hacache_ejected_shards{a}", 0.0)])
        family(
            "hacache_pool_connections",
            "gauge",
            [
                (f'hacache_pool_connections{server[:-1]},state="{state}"}}', float(count))
                for state, count in (("in_use", 2), ("idle", 8))
            ],
        )
        family(
            "hacache_pool_timeouts_total", "counter", [(f"hacache_pool_timeouts_total{server}", n)]
        )
        family("redis_memory_used_bytes", "gauge", [("redis_memory_used_bytes", 250e6)])
        family("redis_memory_max_bytes", "gauge", [("redis_memory_max_bytes", 1e9)])
        return "\n".join(out) + "\n"

    @staticmethod
    def histogram(
        out: list[str], name: str, base: str, n: int, within: dict[float, int], total: float
    ) -> None:
        """``within`` maps a bound to how many observations per scrape fall at or below it."""
        out.append(f"# HELP {name} hacache test series")
        out.append(f"# TYPE {name} histogram")
        count = max(within.values())
        below = 0
        for bound in BUCKETS:
            below = max([below] + [c for b, c in within.items() if b <= bound])
            out.append(f'{name}_bucket{{{base},le="{bound!r}"}} {float(below * n)!r}')
        out.append(f'{name}_bucket{{{base},le="+Inf"}} {float(count * n)!r}')
        out.append(f"{name}_sum{{{base}}} {total * n!r}")
        out.append(f"{name}_count{{{base}}} {float(count * n)!r}")


@pytest.fixture(scope="module")
def exposition() -> Iterator[tuple[Exposition, int]]:
    source = Exposition()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = source.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield source, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:  # a bad query answers 400 with a JSON body
            body = error.read()
            try:
                return json.loads(body)
            except ValueError:  # still starting: 503 with a plain-text body
                return {"status": "unavailable", "error": body.decode(errors="replace")}

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, exposition: tuple[Exposition, int]
) -> Iterator[Prometheus]:
    executable = binary("prometheus")
    _, target_port = exposition
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: hacache\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    port = free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                executable,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(port)
    try:
        # Three scrapes give every rate two or more samples; then one more rule evaluation.
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no scrapes in 20s:\n" + log.read_text()[-3000:]
            try:
                result = server.query("count_over_time(hacache_calls_total[1m])")["data"]["result"]
            except (urllib.error.URLError, ConnectionError, KeyError):
                result = []
            if result and float(result[0]["value"][1]) >= 3:
                break
            time.sleep(0.2)
        time.sleep(1.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def panel_targets() -> list[Any]:
    return [
        pytest.param(p["title"], t["expr"], id=f"{p['id']}{t['refId']}-{p['title'][:40]}")
        for p in query_panels()
        for t in p["targets"]
    ]


def as_grafana_sends(expr: str) -> str:
    """The query with the dashboard's variables replaced, as Grafana would send it."""
    expr = expr.replace("$__rate_interval", "1m").replace("${alias}", ALIAS)
    expr = expr.replace("$alias", ALIAS)
    assert "$" not in expr, expr
    return expr


@pytest.mark.parametrize(("title", "expr"), panel_targets())
def test_dashboard_query_answers(prometheus: Prometheus, title: str, expr: str) -> None:
    """Every panel query parses and evaluates, and finds data: every metric it reads is served."""
    answer = prometheus.query(as_grafana_sends(expr))
    assert answer["status"] == "success", answer
    assert answer["data"]["result"], f"{title}: no data for {expr}"


@pytest.mark.parametrize(
    ("title", "value"),
    [
        ("Hit rate", 0.9),
        ("Mean latency per shard", 0.002),
        ("p99 latency per shard", 0.00475),
        ("Invalidations later than 1s", 0.0),
        ("Near-cache size", 65536.0),
        ("Redis memory used / maxmemory", 0.25),
        ("Pool connections", 2.0),
    ],
)
def test_dashboard_query_values(prometheus: Prometheus, title: str, value: float) -> None:
    """Panels compute what they claim, on series whose rates are known. Only ratios and gauges:
    a 5-minute rate over the few seconds of samples here is extrapolated to a fraction of the
    real one (the errors per minute come out near 1, not 60)."""
    (panel,) = [p for p in query_panels() if p["title"].startswith(title)]
    answer = prometheus.query(as_grafana_sends(panel["targets"][0]["expr"]))
    values = sorted(float(sample["value"][1]) for sample in answer["data"]["result"])
    # Pool connections: the smaller, in_use series first.
    assert values[0] == pytest.approx(value, rel=0.1, abs=1e-9), (title, values)


def test_rules_load_and_evaluate(prometheus: Prometheus) -> None:
    """Prometheus loads every rule, evaluates each without error, and nothing fires on the
    healthy series served."""
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 21
    for rule in rules:
        assert rule["health"] == "ok", rule
        if rule["type"] == "alerting":
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["name"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        else:
            answer = prometheus.query(rule["name"])
            assert answer["data"]["result"], f"recording rule {rule['name']} has no data"
    active = prometheus.get("/api/v1/alerts")["data"]["alerts"]  # pending ones too
    assert active == []
