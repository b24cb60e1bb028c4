"""Ketama placement agrees with a real twemproxy (nutcracker) in front of the same shards."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from hacache.ring import HashRing
from hacache.topology import free_port

NUTCRACKER = shutil.which("nutcracker") or (
    "/usr/sbin/nutcracker" if shutil.which("nutcracker", path="/usr/sbin") else None
)
pytestmark = pytest.mark.skipif(NUTCRACKER is None, reason="nutcracker (twemproxy) not installed")

WEIGHTS = {"shard0": 1, "shard1": 2, "shard2": 1}


@pytest.fixture(params=["md5", "fnv1a_64"])
def proxy(request, topology, tmp_path) -> Iterator[tuple[redis.Redis, str]]:
    masters = topology.masters()
    servers = "\n".join(
        f"    - {masters[name].host}:{masters[name].port}:{WEIGHTS[name]} {name}"
        for name in topology.shard_names
    )
    port = free_port()
    conf = tmp_path / "nutcracker.yml"
    conf.write_text(
        "pool:\n"
        f"  listen: 127.0.0.1:{port}\n"
        f"  hash: {request.param}\n"
        "  distribution: ketama\n"
        "  redis: true\n"
        "  auto_eject_hosts: false\n"
        f"  servers:\n{servers}\n"
    )
    process = subprocess.Popen(
        [NUTCRACKER, "-c", str(conf), "-s", str(free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # twemproxy rejects CLIENT SETINFO, which redis-py sends on connect unless told not to.
    client = redis.Redis(port=port, protocol=2, socket_timeout=2, driver_info=None)
    try:
        for _ in range(100):
            try:
                client.set("probe", 1)
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield client, request.param
    finally:
        process.terminate()
        process.wait(5)


def test_ketama_places_keys_where_twemproxy_does(topology, proxy):
    client, key_hash = proxy
    ring = HashRing(WEIGHTS, placement="ketama", key_hash=key_hash)
    masters = topology.masters()
    direct = {name: redis.Redis(host=n.host, port=n.port) for name, n in masters.items()}
    keys = [f"twem:{key_hash}:{i}:ü" for i in range(300)] + ["{tag}x", "", "\xff"]
    for c in direct.values():
        c.delete(*keys)  # the other key hash's run left some of these behind
    for key in keys:
        client.set(key, "1")
    for key in keys:
        holders = [name for name, c in direct.items() if c.exists(key)]
        assert holders == [ring.node_for(key)], key
