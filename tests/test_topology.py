"""Tests for the local Redis topology launcher; they start real redis-server/sentinel processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hacache import topology as topo_mod
from hacache.topology import Node, RedisNotInstalled, Topology, TopologyError, looks_like_node
from hacache.topology import process as topo_process

REPO = Path(__file__).resolve().parent.parent
WAIT = 30.0  # generous bound for polls; never asserted on as a duration


# --------------------------------------------------------------------------- helpers


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (T: stopped), None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int) -> bool:
    """A pid counts as alive unless gone or a zombie (orphans may never be reaped here)."""
    return proc_state(pid) not in (None, "Z", "X")


def client(node: Node, password: str | None = None) -> redis.Redis:
    return redis.Redis(
        host=node.host,
        port=node.port,
        password=password,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def ping(node: Node, password: str | None = None) -> bool:
    try:
        with client(node, password) as c:
            return bool(c.ping())
    except (redis.RedisError, OSError):
        return False


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Bounded poll: return the first truthy value, or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def status_of(topo: Topology, name: str) -> dict[str, Any]:
    return next(row for row in topo.status() if row["name"] == name)


@pytest.fixture
def make_topology(tmp_path: Path) -> Iterator[Callable[..., Topology]]:
    """Build topologies under tmp_path and always tear them down."""
    made: list[Topology] = []

    def make(**kwargs: Any) -> Topology:
        topo = Topology(tmp_path / f"topo{len(made)}", **kwargs)
        made.append(topo)
        return topo

    yield make
    for topo in made:
        topo.down()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        [sys.executable, "-m", "hacache.topology", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --------------------------------------------------------------------------- lifecycle


def test_up_down_sharded_with_replicas_and_sentinels(make_topology: Callable[..., Topology]):
    topo = make_topology(shards=2, replicas=1, sentinels=3).up()
    pids = [n.pid for n in topo.nodes()]
    assert topo.shard_names == ["shard0", "shard1"]
    assert sorted(n.name for n in topo.nodes()) == [
        "sentinel0", "sentinel1", "sentinel2",
        "shard0-master", "shard0-replica1", "shard1-master", "shard1-replica1",
    ]  # fmt: skip
    assert all(pid is not None and pid_alive(pid) for pid in pids)
    assert topo.state_path.exists()

    for node in topo.nodes():
        assert ping(node), node.name
    for shard in topo.shard_names:
        with client(topo.node(f"{shard}-replica1")) as c:
            assert c.info("replication")["master_link_status"] == "up"
    for host, port in topo.sentinel_addresses():
        with redis.Redis(host=host, port=port, socket_timeout=0.5, decode_responses=True) as c:
            for shard in topo.shard_names:
                master = topo.node(f"{shard}-master")
                addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", shard)
                assert (addr[0], int(addr[1])) == (master.host, master.port)

    rows = {row["name"]: row for row in topo.status()}
    assert all(row["alive"] and row["process"] == "running" for row in rows.values())
    assert rows["shard0-master"]["role"] == "master"
    assert rows["shard1-replica1"]["role"] == "replica"
    assert rows["shard1-replica1"]["master_link_status"] == "up"
    assert rows["sentinel2"]["role"] == "sentinel"
    sentinel_view = {
        name: (row["sentinel_role"], row["sentinel_flags"]) for name, row in rows.items()
    }
    assert sentinel_view == {
        "shard0-master": ("master", None), "shard0-replica1": ("replica", None),
        "shard1-master": ("master", None), "shard1-replica1": ("replica", None),
        "sentinel0": (None, None), "sentinel1": (None, None), "sentinel2": (None, None),
    }  # fmt: skip
    assert {s: n.name for s, n in topo.masters().items()} == {
        "shard0": "shard0-master",
        "shard1": "shard1-master",
    }
    m0 = topo.node("shard0-master")
    assert topo.master_urls()[0] == f"redis://127.0.0.1:{m0.port}/0?name=shard0"
    sentinels = ",".join(f"{h}:{p}" for h, p in topo.sentinel_addresses())
    assert topo.sentinel_urls()[1] == f"sentinel://{sentinels}/shard1/0?name=shard1"
    assert topo.caches_setting() == {  # with sentinels, hacache finds masters through them
        "default": {"BACKEND": "hacache.HACache", "LOCATION": topo.sentinel_urls()}
    }
    assert topo.caches_setting(X=1)["default"]["OPTIONS"] == {"X": 1}

    topo.down()
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert not topo.state_path.exists()
    assert all(n.pid is None for n in topo.nodes())
    topo.down()  # idempotent


def test_sentinel_config(make_topology: Callable[..., Topology]):
    topo = make_topology(shards=2, sentinels=3, down_after_ms=700, password="s3cret")
    with topo:
        text = Path(topo.node("sentinel1").conf).read_text()
        m1 = topo.node("shard1-master")
    assert f"sentinel monitor shard1 127.0.0.1 {m1.port} 2" in text
    assert "sentinel down-after-milliseconds shard1 700" in text
    assert "sentinel auth-pass shard0 s3cret" in text


def test_caches_setting_works_with_a_password_and_sentinels(
    make_topology: Callable[..., Topology],
):
    from tests.conftest import make_cache

    topo = make_topology(shards=1, replicas=1, sentinels=1, password="s3cret").up()
    params = topo.caches_setting()["default"]
    sentinel = topo.node("sentinel0")
    # The servers' password, and none for the Sentinels, which have none (AUTH would fail).
    assert params["LOCATION"] == [
        f"sentinel://:s3cret@127.0.0.1:{sentinel.port}/shard0/0?name=shard0"
    ]
    cache = make_cache(params)
    cache.set("k", "v")
    assert cache.get("k") == "v"
    with client(topo.masters()["shard0"], "s3cret") as c:
        assert c.dbsize() == 1


def test_context_manager_and_password(make_topology: Callable[..., Topology]):
    topo = make_topology(shards=1, replicas=1, password="s3cret")
    with topo as running:
        assert running is topo
        master = topo.node("shard0-master")
        pid = master.pid
        with pytest.raises(redis.AuthenticationError), client(master) as c:
            c.set("k", "v")
        assert ping(master, "s3cret")
        assert topo.master_urls() == [f"redis://:s3cret@127.0.0.1:{master.port}/0?name=shard0"]
    assert pid is not None and not pid_alive(pid)


def test_load_round_trip(make_topology: Callable[..., Topology]):
    topo = make_topology(shards=2, replicas=1, password="pw").up()
    loaded = Topology.load(topo.run_dir)
    assert loaded.nodes() == topo.nodes()
    assert (loaded.shards, loaded.replicas, loaded.sentinels, loaded.password) == (2, 1, 0, "pw")
    assert loaded.master_urls() == topo.master_urls()
    assert all(row["alive"] for row in loaded.status())
    assert all(row["sentinel_role"] is None for row in loaded.status())  # no Sentinels

    pids = [n.pid for n in topo.nodes()]
    loaded.down()  # stops processes it did not spawn itself, by pid
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert not topo.state_path.exists()
    topo.down()  # the original handle copes with everything already gone
    with pytest.raises(FileNotFoundError):
        Topology.load(topo.run_dir)


def test_up_refuses_second_topology_in_same_dir(make_topology: Callable[..., Topology]):
    first = make_topology(shards=1).up()
    second = Topology(first.run_dir, shards=1)
    with pytest.raises(topo_mod.TopologyRunning, match="already running"):
        second.up()
    assert ping(first.node("shard0-master"))


def test_up_replaces_stale_state(make_topology: Callable[..., Topology]):
    first = make_topology(shards=1).up()
    state = first.state_path.read_text()
    first.down()
    first.state_path.write_text(state)  # as if the machine had rebooted
    second = Topology(first.run_dir, shards=1)
    try:
        second.up()
        assert ping(second.node("shard0-master"))
        assert (
            Topology.load(first.run_dir).node("shard0-master").pid
            == second.node("shard0-master").pid
        )
    finally:
        second.down()


# --------------------------------------------------------------------------- fault injection


def test_kill_and_start_master(make_topology: Callable[..., Topology]):
    topo = make_topology(shards=1, replicas=1).up()
    master, replica = topo.node("shard0-master"), topo.node("shard0-replica1")
    old_pid, port = master.pid, master.port
    with client(master) as c:
        c.set("k", "v")

    topo.kill("shard0-master")
    assert old_pid is not None and not pid_alive(old_pid)
    assert master.pid is None
    assert not ping(master)
    row = status_of(topo, "shard0-master")
    assert (row["running"], row["process"], row["alive"]) == (False, "stopped", False)
    with pytest.raises(TopologyError, match="not running"):
        topo.kill("shard0-master")

    topo.start("shard0-master")
    assert master.port == port
    assert master.pid is not None and master.pid != old_pid and pid_alive(master.pid)
    assert ping(master)
    assert Topology.load(topo.run_dir).node("shard0-master").pid == master.pid
    wait_for(
        lambda: status_of(topo, "shard0-replica1")["master_link_status"] == "up",
        "replica to reconnect to the restarted master",
    )
    with pytest.raises(TopologyError, match="already running"):
        topo.start("shard0-master")

    topo.stop("shard0-replica1")
    assert replica.pid is None
    topo.start("shard0-replica1")
    assert ping(replica)


def test_pause_and_resume(make_topology: Callable[..., Topology]):
    topo = make_topology(shards=1).up()
    master = topo.node("shard0-master")

    topo.pause("shard0-master")
    row = status_of(topo, "shard0-master")
    assert (row["running"], row["process"], row["alive"]) == (True, "paused", False)
    with pytest.raises(redis.TimeoutError), client(master) as c:
        c.ping()

    topo.resume("shard0-master")
    assert ping(master)
    row = status_of(topo, "shard0-master")
    assert (row["process"], row["alive"]) == ("running", True)

    topo.pause("shard0-master")  # down() must also stop a frozen process
    pid = master.pid
    topo.down()
    assert pid is not None and not pid_alive(pid)


def test_masters_follow_sentinel_failover(make_topology: Callable[..., Topology]):
    topo = make_topology(
        shards=1, replicas=1, sentinels=3, down_after_ms=500, failover_timeout_ms=2000
    ).up()
    assert topo.masters()["shard0"].name == "shard0-master"

    topo.kill("shard0-master")
    promoted = wait_for(
        lambda: (m := topo.masters()["shard0"]).name != "shard0-master" and m,
        "Sentinel to promote the replica",
    )
    replica = topo.node("shard0-replica1")
    assert promoted is replica
    assert topo.master_urls() == [f"redis://127.0.0.1:{replica.port}/0?name=shard0"]
    assert status_of(topo, "shard0-replica1")["role"] == "master"
    assert status_of(topo, "shard0-replica1")["sentinel_role"] == "master"
    wait_for(  # demoted at once, marked down after down-after-milliseconds
        lambda: (
            (row := status_of(topo, "shard0-master"))["sentinel_role"] == "replica"
            and "s_down" in (row["sentinel_flags"] or "").split(",")
        ),
        "Sentinel to list the dead master as a replica that is down",
    )

    topo.start("shard0-master")  # comes back as a master; Sentinel turns it into a replica
    wait_for(
        lambda: (
            (row := status_of(topo, "shard0-master"))["role"] == "replica"
            and (row["sentinel_role"], row["sentinel_flags"]) == ("replica", None)
        ),
        "the old master to rejoin as a healthy replica",
    )
    assert topo.masters()["shard0"] is replica


class FakeSentinel:
    """Answers SENTINEL MASTER/REPLICAS as a Sentinel with the given view would."""

    def __init__(self, epoch: int, master: int, replica: int, master_flags: str = "master"):
        self.master = ["name", "shard0", "ip", "127.0.0.1", "port", str(master),
                       "flags", master_flags, "config-epoch", str(epoch)]  # fmt: skip
        self.replicas = [{"ip": "127.0.0.1", "port": str(replica), "flags": "slave"}]  # RESP3

    def execute_command(self, *args: str) -> Any:
        assert args[:2] in (("SENTINEL", "MASTER"), ("SENTINEL", "REPLICAS")), args
        return self.master if args[1] == "MASTER" else self.replicas


def test_sentinel_view_prefers_the_latest_epoch(monkeypatch: pytest.MonkeyPatch):
    from contextlib import contextmanager

    from hacache.topology import probes

    # The failover leader (epoch 1) has promoted port 2; a lagging Sentinel still says port 1;
    # a third does not answer. Whatever the order, the leader's view wins.
    answers = {
        26001: FakeSentinel(0, master=1, replica=2),
        26002: FakeSentinel(1, master=2, replica=1),
        26003: None,
    }

    @contextmanager
    def fake_probe(node: Node, password: str | None) -> Iterator[Any]:
        fake = answers[node.port]
        if fake is None:
            raise redis.ConnectionError("refused")
        yield fake

    monkeypatch.setattr(probes, "probe", fake_probe)
    sentinels = [Node(f"sentinel{p}", "sentinel", None, "127.0.0.1", p) for p in answers]
    for order in (sentinels, sentinels[::-1]):
        view = probes.sentinel_view(order, "shard0")
        assert view is not None
        assert (view.epoch, view.master) == (1, ("127.0.0.1", 2))
        assert view.roles == {2: ("master", frozenset()), 1: ("replica", frozenset())}
    answers[26001] = FakeSentinel(2, master=1, replica=2, master_flags="master,s_down,o_down")
    view = probes.sentinel_view(sentinels, "shard0")  # a later epoch, and a dead master
    assert view is not None and view.roles[1] == ("master", frozenset({"s_down", "o_down"}))
    assert probes.sentinel_view(sentinels[2:], "shard0") is None


# --------------------------------------------------------------------------- safety


def test_down_spares_a_recycled_pid(make_topology: Callable[..., Topology]):
    topo = make_topology(shards=1).up()
    master = topo.node("shard0-master")
    real_pid = master.pid
    # Looks like Redis, but on another port (…:PORT1), as a recycled pid might.
    impostor = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)",
         "redis-server", f"127.0.0.1:{master.port}1"],
    )  # fmt: skip
    try:
        state = json.loads(topo.state_path.read_text())
        state["nodes"][0]["pid"] = impostor.pid
        topo.state_path.write_text(json.dumps(state))

        Topology.load(topo.run_dir).down()
        assert impostor.poll() is None, "down() killed a process it did not start"
        assert not topo.state_path.exists()
    finally:
        impostor.kill()
        impostor.wait()
    topo.down()
    assert real_pid is not None and not pid_alive(real_pid)


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("redis-server 127.0.0.1:7000", True),
        ("redis-sentinel 127.0.0.1:7000 [sentinel]", True),
        ("/usr/bin/redis-server /run/x/redis.conf", True),
        ("redis-server 127.0.0.1:70001", False),
        ("redis-server 127.0.0.1:6379", False),
        ("sleep 7000 :7000", False),
        ("", False),
    ],
)
def test_looks_like_node(cmdline: str, expected: bool):
    node = Node("shard0-master", "master", "shard0", "127.0.0.1", 7000, conf="/run/x/redis.conf")
    assert looks_like_node(cmdline, node) is expected


def test_missing_redis_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    run_dir = tmp_path / "run"
    with pytest.raises(RedisNotInstalled, match="apt-get install -y redis-server redis-sentinel"):
        Topology(run_dir, shards=1).up()
    assert "brew install redis" in str(RedisNotInstalled())
    assert not run_dir.exists()

    assert topo_mod.main(["up", "--dir", str(run_dir)]) != 0
    assert "apt-get install" in capsys.readouterr().err
    assert not run_dir.exists()


def test_port_conflict_is_retried(make_topology: Callable[..., Topology], monkeypatch):
    import socket

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_port = topo_process.free_port
    handed_out: list[int] = []

    def fake_free_port(host: str = "127.0.0.1") -> int:
        port = taken if not handed_out else real_free_port(host)
        handed_out.append(port)
        return port

    monkeypatch.setattr(topo_process, "free_port", fake_free_port)
    try:
        topo = make_topology(shards=1).up()
    finally:
        squatter.close()
    master = topo.node("shard0-master")
    assert handed_out[0] == taken
    assert master.port != taken
    assert ping(master)


def test_failed_up_stops_what_it_started(make_topology: Callable[..., Topology], monkeypatch):
    spawned: list[int] = []
    real_spawn = Topology._spawn
    real_sentinel_conf = Topology._sentinel_conf

    def recording_spawn(self: Topology, node: Node, *, fresh_log: bool) -> None:
        real_spawn(self, node, fresh_log=fresh_log)
        assert node.pid is not None
        spawned.append(node.pid)

    def broken_sentinel_conf(self: Topology, node: Node) -> list[str]:
        return [*real_sentinel_conf(self, node), "no-such-directive yes"]

    monkeypatch.setattr(Topology, "_spawn", recording_spawn)
    monkeypatch.setattr(Topology, "_sentinel_conf", broken_sentinel_conf)
    topo = make_topology(shards=1, replicas=1, sentinels=1)
    with pytest.raises(TopologyError) as excinfo:
        topo.up()
    message = str(excinfo.value)
    assert "sentinel0" in message
    assert "no-such-directive" in message  # the log tail explains the failure
    assert len(spawned) == 3
    assert not any(pid_alive(pid) for pid in spawned)
    assert not topo.state_path.exists()


def test_invalid_arguments(tmp_path: Path):
    with pytest.raises(ValueError):
        Topology(tmp_path, shards=0)
    with pytest.raises(ValueError):
        Topology(tmp_path, password="has space")
    with pytest.raises(KeyError, match="nope"):
        Topology(tmp_path).node("nope")
    with pytest.raises(topo_mod.UnknownNode) as excinfo:
        Topology(tmp_path, shards=1, replicas=1).node("shard1-master")
    assert str(excinfo.value) == (
        "no node named 'shard1-master'; valid nodes: shard0-master, shard0-replica1"
    )
    assert isinstance(excinfo.value, TopologyError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("KILL", "SIGKILL"), ("sigterm", "SIGTERM"), ("Hup", "SIGHUP"), ("9", "SIGKILL"),
     (" STOP ", "SIGSTOP"), ("BOGUS", None), ("SIGNOPE", None), ("999", None), ("", None)],
)  # fmt: skip
def test_parse_signal(text: str, expected: str | None):
    if expected is None:
        with pytest.raises(ValueError):
            topo_process.parse_signal(text)
    else:
        assert topo_process.parse_signal(text).name == expected


# --------------------------------------------------------------------------- CLI


def test_cli_up_status_down(tmp_path: Path):
    run_dir = tmp_path / "cli"
    up = run_cli("up", "--dir", str(run_dir), "--shards", "2", "--replicas", "1",
                 "--sentinels", "1", "--down-after-ms", "800")  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        assert "shard1-replica1" in up.stdout
        printed = up.stdout.split("CACHES = \n", 1)[1]
        caches = json.loads(printed)
        assert caches == json.loads((run_dir / "caches.json").read_text())
        for name in ("caches.json", "topology.json"):  # both may hold the password
            assert (run_dir / name).stat().st_mode & 0o777 == 0o600, name
        assert len(caches["default"]["LOCATION"]) == 2
        assert caches["default"]["LOCATION"][1].endswith("/0?name=shard1")

        topo = Topology.load(run_dir)
        assert topo.down_after_ms == 800
        pids = [n.pid for n in topo.nodes()]
        assert len(pids) == 5
        assert all(pid is not None and pid_alive(pid) for pid in pids)  # outlived the CLI

        status = run_cli("status", "--dir", str(run_dir))
        assert status.returncode == 0, status.stderr
        assert "sentinel0" in status.stdout
        assert status.stdout.split()[:4] == ["name", "role", "sentinel_role", "sentinel_flags"]
        status = run_cli("status", "--dir", str(run_dir), "--json")
        assert status.returncode == 0, status.stderr
        rows = {row["name"]: row for row in json.loads(status.stdout)}
        assert rows["shard1-master"]["sentinel_role"] == "master"
        assert rows["shard1-replica1"]["sentinel_role"] == "replica"
        assert rows["shard1-replica1"]["role"] == "replica"

        again = run_cli("up", "--dir", str(run_dir), "--json")
        assert again.returncode != 0
        assert "already running" in again.stderr

        topo.kill("shard0-replica1")
        status = run_cli("status", "--dir", str(run_dir))
        assert status.returncode != 0
        assert "shard0-replica1" in status.stderr

        down = run_cli("down", "--dir", str(run_dir))
        assert down.returncode == 0, down.stderr
        assert not any(pid_alive(pid) for pid in pids if pid is not None)
        assert not (run_dir / "topology.json").exists()
        assert run_cli("down", "--dir", str(run_dir)).returncode == 0
        assert run_cli("status", "--dir", str(run_dir)).returncode != 0
    finally:
        if (run_dir / "topology.json").exists():
            Topology.load(run_dir).down()


def test_cli_json_output(tmp_path: Path):
    run_dir = tmp_path / "cli-json"
    up = run_cli("up", "--dir", str(run_dir), "--shards", "1", "--replicas", "0",
                 "--sentinels", "0", "--password", "pw", "--json")  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        caches = json.loads(up.stdout)
        port = Topology.load(run_dir).node("shard0-master").port
        assert caches["default"]["LOCATION"] == [f"redis://:pw@127.0.0.1:{port}/0?name=shard0"]
    finally:
        if (run_dir / "topology.json").exists():
            Topology.load(run_dir).down()


def test_cli_fault_injection(tmp_path: Path):
    run_dir = tmp_path / "cli-faults"
    at = ("--dir", str(run_dir))
    up = run_cli("up", *at, "--shards", "1", "--replicas", "1", "--sentinels", "0")
    try:
        assert up.returncode == 0, up.stderr
        replica = Topology.load(run_dir).node("shard0-replica1")
        assert replica.pid is not None

        unknown = run_cli("kill", "shard9-master", *at)
        assert unknown.returncode == 2
        assert unknown.stderr.strip() == (
            "error: no node named 'shard9-master'; valid nodes: shard0-master, shard0-replica1"
        )
        for command in ("pause", "resume", "start"):
            assert run_cli(command, "nope", *at).returncode == 2, command
        bad = run_cli("kill", "shard0-replica1", "--signal", "BOGUS", *at)
        assert bad.returncode == 2
        assert "unknown signal 'BOGUS'" in bad.stderr
        assert pid_alive(replica.pid) and ping(replica)

        paused = run_cli("pause", "shard0-replica1", *at)
        assert paused.returncode == 0, paused.stderr
        assert proc_state(replica.pid) == "T"
        assert not ping(replica)
        status = run_cli("status", "--json", *at)
        assert status.returncode == 1  # a paused node answers nothing: it counts as dead
        assert "dead: shard0-replica1" in status.stderr
        rows = {row["name"]: row for row in json.loads(status.stdout)}
        assert (rows["shard0-replica1"]["process"], rows["shard0-master"]["process"]) == (
            "paused", "running"
        )  # fmt: skip

        resumed = run_cli("resume", "shard0-replica1", *at)
        assert resumed.returncode == 0, resumed.stderr
        assert proc_state(replica.pid) != "T" and ping(replica)

        stopped = run_cli("kill", "shard0-replica1", "--signal", "STOP", *at)  # not fatal
        assert (stopped.returncode, stopped.stdout.split()[:2]) == (0, ["sent", "SIGSTOP"])
        wait_for(lambda: proc_state(replica.pid) == "T", "SIGSTOP to freeze the replica")
        assert run_cli("resume", "shard0-replica1", *at).returncode == 0

        killed = run_cli("kill", "shard0-replica1", "--signal", "term", *at)
        assert killed.returncode == 0, killed.stderr
        assert killed.stdout.splitlines() == [  # a replica, and no Sentinels: nothing to promote
            f"shard0-replica1 (pid {replica.pid}) ended by SIGTERM; "
            "`start shard0-replica1` brings it back"
        ]
        assert not pid_alive(replica.pid)
        assert Topology.load(run_dir).node("shard0-replica1").pid is None
        for command in ("kill", "pause", "resume"):
            again = run_cli(command, "shard0-replica1", *at)
            assert again.returncode == 2, command
            assert "error: shard0-replica1 is not running" in again.stderr

        started = run_cli("start", "shard0-replica1", *at)
        assert started.returncode == 0, started.stderr
        back = Topology.load(run_dir).node("shard0-replica1")
        assert back.port == replica.port
        assert back.pid is not None and back.pid != replica.pid
        assert pid_alive(back.pid) and ping(back)  # outlived the command that started it
        assert f"started shard0-replica1 on 127.0.0.1:{back.port}" in started.stdout
        again = run_cli("start", "shard0-replica1", *at)
        assert again.returncode == 2
        assert "already running" in again.stderr
        assert run_cli("status", *at).returncode == 0
    finally:
        if (run_dir / "topology.json").exists():
            Topology.load(run_dir).down()
    nowhere = ("--dir", str(tmp_path / "nothing-here"))
    for command in ("kill", "pause", "resume", "start"):
        missing = run_cli(command, "shard0-master", *nowhere)
        assert missing.returncode == 1, command
        assert "no topology state file" in missing.stderr


def test_cli_failover_by_hand(tmp_path: Path):
    """What the README suggests: kill a shard's master, watch Sentinel promote its replica."""
    run_dir = tmp_path / "cli-failover"
    at = ("--dir", str(run_dir))
    up = run_cli("up", *at, "--shards", "2", "--replicas", "1", "--sentinels", "3",
                 "--down-after-ms", "500", "--failover-timeout-ms", "2000")  # fmt: skip

    def roles() -> dict[str, tuple[Any, Any]]:
        status = run_cli("status", "--json", *at)
        return {r["name"]: (r["role"], r["sentinel_role"]) for r in json.loads(status.stdout)}

    try:
        assert up.returncode == 0, up.stderr
        assert roles()["shard1-master"] == ("master", "master")
        killed = run_cli("kill", "shard1-master", *at)
        assert killed.returncode == 0, killed.stderr
        assert "it was shard1's master: Sentinel marks it down after 500 ms" in killed.stdout
        assert run_cli("status", *at).returncode == 1
        wait_for(
            lambda: roles()["shard1-replica1"] == ("master", "master"),
            "Sentinel to promote shard1's replica",
        )
        after = roles()
        assert after["shard1-master"] == (None, "replica")  # dead, and demoted in Sentinel's eyes
        assert after["shard0-master"] == ("master", "master")  # the other shard is untouched

        started = run_cli("start", "shard1-master", *at)
        assert started.returncode == 0, started.stderr
        assert roles()["shard1-master"][1] == "replica"
        assert run_cli("status", *at).returncode == 0
    finally:
        if (run_dir / "topology.json").exists():
            Topology.load(run_dir).down()
