"""TLS on real servers: TLS-only ``redis-server`` and ``redis-sentinel`` processes started by the
launcher, with a CA, server and client certificates the fixtures make with the openssl CLI.

Data, pub/sub (the near-cache's invalidations, across two processes) and Sentinel connections
all go over TLS; so do replication and Sentinel's own links (``tls-replication yes``). The
failure cases check what an operator reads: a missing client certificate, a CA that did not
sign the server's certificate, and TLS on one side only all say so.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from redis.connection import Connection, SSLConnection

from hacache.inspection import ask_sentinels
from hacache.topology import Topology, main
from hacache.topology.tls import Certificates, make_certificates
from tests.conftest import DELIVERY, cache_params, key_on, make_cache, running, until

FAST = {"SOCKET_TIMEOUT": 0.5, "SOCKET_CONNECT_TIMEOUT": 0.5}
SECRET = "k3y-passphrase"


@pytest.fixture(scope="module")
def tls_shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Two TLS-only shards that require a client certificate."""
    yield from running(Topology(tmp_path_factory.mktemp("tls"), shards=2, tls=True))


def tls_params(topo: Topology, urls: list[str] | None = None, **options: Any) -> dict:
    params = cache_params(topo, "sharded", **options)
    if urls is not None:
        params["LOCATION"] = urls
    return params


def parse_shard(url: str, common: dict) -> Any:
    """A URL parsed with the defaults OPTIONS gives every shard."""
    from hacache.options import parse_options

    assert not common
    return parse_options([url], {}).shards[0]


def first_error(params: dict, call: str = "get") -> str:
    """The message of the error the first call to the cache raises."""
    cache = make_cache(params)
    with pytest.raises(redis.RedisError) as info:
        getattr(cache, call)("k", *([1] if call == "set" else []))
    return str(info.value)


def without(url: str, *names: str) -> str:
    base, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p.split("=", 1)[0] not in names]
    return f"{base}?{'&'.join(kept)}"


# -- the certificates and config files -------------------------------------------------------


def test_certificates_are_made_once_with_private_keys(tls_shards):
    certs = tls_shards.certificates
    assert certs is not None and certs.exist()
    for key in (certs.ca_key, certs.server_key, certs.client_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    text = subprocess.run(
        ["openssl", "x509", "-in", certs.server_cert, "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    before = Path(certs.server_cert).stat().st_mtime_ns
    assert make_certificates(certs.dir) == certs  # reused: restarted nodes keep their identity
    assert Path(certs.server_cert).stat().st_mtime_ns == before


def test_nodes_listen_on_tls_only_and_urls_carry_the_certificates(tls_shards):
    conf = Path(tls_shards.node("shard0-master").conf).read_text().splitlines()
    port = tls_shards.node("shard0-master").port
    assert {"port 0", f"tls-port {port}", "tls-auth-clients yes", "tls-replication yes"} <= {*conf}
    certs = tls_shards.certificates
    assert certs is not None
    url = tls_shards.master_urls()[0]
    assert url.startswith(f"rediss://127.0.0.1:{port}/0?name=shard0&ssl_ca_certs={certs.ca}")
    assert f"ssl_certfile={certs.client_cert}" in url and f"ssl_keyfile={certs.client_key}" in url
    spec = parse_shard(url, {})
    assert spec.connection_class is SSLConnection
    assert spec.connection_kwargs["ssl_ca_certs"] == certs.ca


# -- data and pub/sub over TLS ---------------------------------------------------------------


def test_get_set_get_many_incr_on_two_tls_shards(tls_shards):
    cache = make_cache(tls_params(tls_shards))
    keys = [key_on(cache, "shard0"), key_on(cache, "shard1")]
    for i, key in enumerate(keys):
        cache.set(key, {"v": i})
        assert cache.get(key) == {"v": i}
    cache.set_many({f"m{i}": i for i in range(20)})
    assert cache.get_many([f"m{i}" for i in range(20)]) == {f"m{i}": i for i in range(20)}
    assert {cache._router.shard_for(cache.make_key(f"m{i}")).name for i in range(20)} == {
        "shard0",
        "shard1",
    }
    for key in keys:
        cache.set(f"n{key}", 10)
        assert cache.incr(f"n{key}", 5) == 15
    assert cache.delete(keys[0]) and cache.get(keys[0]) is None

    async def async_round() -> Any:
        await cache.aset(keys[1], "async")
        return await cache.aget(keys[1])

    assert asyncio.run(async_round()) == "async"


def test_near_cache_invalidation_across_processes_over_tls(tls_shards, remote_factory):
    params = tls_params(tls_shards, NEAR_CACHE=True)
    cache = make_cache(params)
    cache._router.bus.listen()
    assert cache._router.near.wait_trusted(DELIVERY)  # subscribed over TLS, on both shards
    reader = remote_factory(params)
    cache.set("k", "v1")
    assert until(lambda: reader("stats")["invalidations"] >= 1, DELIVERY)
    assert reader("get", "k") == "v1"
    assert reader("get", "k") == "v1"
    assert reader("stats")["hits"] >= 1  # served from the reader's near-cache
    cache.set("k", "v2")  # only an invalidation delivered over TLS can evict v1 there
    assert until(lambda: reader("get", "k") == "v2", DELIVERY)
    cache.delete("k")
    assert until(lambda: reader("get", "k") is None, DELIVERY)


# -- Sentinel over TLS -----------------------------------------------------------------------


def test_sentinel_tls_topology_follows_a_promotion(tmp_path):
    topo = Topology(tmp_path, shards=1, replicas=1, sentinels=3, tls=True,
                    down_after_ms=1000, failover_timeout_ms=2000)  # fmt: skip
    for _ in running(topo):
        url = topo.sentinel_urls()[0]
        assert "&ssl=true&ssl_ca_certs=" in url
        conf = Path(topo.node("sentinel0").conf).read_text().splitlines()
        assert "port 0" in conf and "tls-replication yes" in conf
        cache = make_cache({**topo.caches_setting(**FAST)["default"], "KEY_PREFIX": "s"})
        shard = cache._router.shards["shard0"]
        assert shard.spec.connection_class is SSLConnection
        shard.discover()  # over TLS to the Sentinels
        # `manage.py hacache` too. Once, under the full suite's load, one of its fresh
        # redis-py TLS connections said "Connection not ready": asked again, not a failure.
        assert until(lambda: ask_sentinels(shard).answered == 3, 5)  # noqa: B023
        assert shard.monitor is not None and shard.monitor._class is SSLConnection
        old = topo.masters()["shard0"]
        assert shard.master.address == f"{old.host}:{old.port}"
        cache.set_many({f"k{i}": i for i in range(10)})
        assert cache.get_many([f"k{i}" for i in range(10)]) == {f"k{i}": i for i in range(10)}
        assert [r.address for r in shard.replicas] == [
            f"{n.host}:{n.port}" for n in topo.nodes() if n.role == "replica"
        ]  # replicated over TLS, and reported by Sentinel as in step
        shard.monitor.ensure_running()  # the +switch-master subscription, over TLS
        topo.kill(old.name)
        assert shard.wait_for(partial(_moved_from, f"{old.host}:{old.port}"), 15)
        new = topo.masters()["shard0"]
        assert new.name == "shard0-replica1" and shard.master.address.endswith(f":{new.port}")
        assert until(partial(_writes, cache), 10)
        assert cache.get("after") == "promotion"
        assert cache.get("k3") == 3  # replicated before the kill


def _moved_from(address: str, view: Any) -> bool:
    return view.master is not None and view.master.address != address


def _writes(cache: Any) -> bool:
    try:
        cache.set("after", "promotion")
    except redis.RedisError:
        return False
    return True


def test_a_plain_sentinel_url_to_tls_sentinels_says_tls(tmp_path):
    for topo in running(Topology(tmp_path, shards=1, sentinels=1, tls=True)):
        url = without(topo.sentinel_urls()[0], "ssl", "ssl_ca_certs", "ssl_certfile",
                      "ssl_keyfile")  # fmt: skip
        message = first_error({"BACKEND": "hacache.HACache", "LOCATION": [url], "OPTIONS": FAST})
        assert "no sentinel" in message and "reset by peer" in message
        assert "TLS-only" in message and "rediss://" in message


# -- failures that must say what is wrong ----------------------------------------------------


def test_a_missing_client_certificate_is_refused_and_says_so(tls_shards):
    url = without(tls_shards.master_urls()[0], "ssl_certfile", "ssl_keyfile")
    for call in ("get", "set"):
        message = first_error(tls_params(tls_shards, [url], **FAST), call)
        # TLS 1.3 ends the handshake before the server checks: "certificate required", or EOF.
        assert "certificate required" in message or "EOF occurred" in message
        assert (
            "no client certificate given (ssl_certfile, ssl_keyfile): does the server ask?"
            in message
        )


def test_tls_auth_clients_optional_lets_a_client_without_certificate_in(tmp_path):
    for topo in running(Topology(tmp_path, shards=1, tls=True, tls_auth_clients="optional")):
        assert "tls-auth-clients optional" in Path(topo.node("shard0-master").conf).read_text()
        url = without(topo.master_urls()[0], "ssl_certfile", "ssl_keyfile")
        cache = make_cache(tls_params(topo, [url]))
        cache.set("k", 1)
        assert cache.get("k") == 1


def test_a_wrong_ca_fails_verification_and_says_so(tls_shards, tmp_path):
    other = make_certificates(tmp_path / "other-ca")
    url = tls_shards.master_urls()[0].replace(
        tls_shards.certificates.ca,
        other.ca,  # type: ignore[union-attr]
    )
    message = first_error(tls_params(tls_shards, [url], **FAST))
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "is the server TLS-enabled" not in message  # it is: it showed a certificate


def test_rediss_to_a_plain_server_says_tls(topology, tls_shards):
    certs = tls_shards.certificates
    assert certs is not None
    query = "&".join(f"{k}={v}" for k, v in certs.client_params().items())
    url = topology.master_urls()[0].replace("redis://", "rediss://", 1) + "&" + query
    message = first_error(tls_params(topology, [url], **FAST))
    assert "while connecting with TLS (rediss://): is the server TLS-enabled?" in message


def test_redis_to_a_tls_server_says_tls(tls_shards):
    url = without(tls_shards.master_urls()[0], "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    url = url.replace("rediss://", "redis://", 1)
    message = first_error(tls_params(tls_shards, [url], **FAST), "set")
    assert "reset by peer" in message
    assert "a TLS-only server resets plain connections: rediss://?" in message


def test_a_plain_server_reset_is_not_blamed_on_tls_for_rediss(topology):
    # The converse stays quiet: a rediss:// shard's errors never suggest redis://.
    params = cache_params(topology)
    params["LOCATION"] = ["redis://127.0.0.1:1/0?name=gone"]
    cache = make_cache(params)
    with pytest.raises(redis.ConnectionError) as info:
        cache.get("k")
    assert "TLS" not in str(info.value)


# -- a key with a passphrase: ssl_password works and is never shown --------------------------


def encrypted_key(certs: Certificates, directory: Path) -> str:
    path = directory / "client-encrypted.key"
    subprocess.run(
        ["openssl", "ec", "-in", certs.client_key, "-aes256", "-passout", f"pass:{SECRET}",
         "-out", str(path)],
        capture_output=True, check=True,
    )  # fmt: skip
    return str(path)


def test_a_client_key_with_a_passphrase_and_its_password_redacted(tls_shards, tmp_path):
    certs = tls_shards.certificates
    assert certs is not None
    key = encrypted_key(certs, tmp_path)
    url = tls_shards.master_urls()[0].replace(certs.client_key, key) + f"&ssl_password={SECRET}"
    cache = make_cache(tls_params(tls_shards, [url]))
    cache.set("pw", 1)
    assert cache.get("pw") == 1
    spec = cache._router.shards["shard0"].spec
    assert SECRET not in repr(spec) and SECRET not in repr(cache._router.shards["shard0"])
    with pytest.raises(ImproperlyConfigured) as info:
        parse_shard(url + "&ssl_bogus=1", {})
    assert SECRET not in str(info.value) and "ssl_password=***" in str(info.value)
    wrong = url.replace(f"ssl_password={SECRET}", "ssl_password=not-it")
    message = first_error(tls_params(tls_shards, [wrong], **FAST))
    assert "not-it" not in message
    sentinel = f"sentinel://127.0.0.1:1/svc?ssl=true&ssl_password={SECRET}&ssl_bogus=1"
    with pytest.raises(ImproperlyConfigured) as info:
        parse_shard(sentinel, {})
    assert SECRET not in str(info.value) and "ssl_password=***" in str(info.value)


# -- sentinel:// TLS parameters --------------------------------------------------------------


def test_sentinel_url_tls_parameters():
    both = parse_shard("sentinel://h:26379/svc?ssl=true&ssl_ca_certs=/ca.crt", {})
    assert both.connection_class is SSLConnection
    assert both.connection_kwargs["ssl_ca_certs"] == "/ca.crt"
    assert both.sentinel_kwargs["ssl"] is True and both.sentinel_kwargs["ssl_ca_certs"] == "/ca.crt"
    data_only = parse_shard("sentinel://h/svc?ssl=true&sentinel_ssl=false&ssl_cert_reqs=none", {})
    assert data_only.connection_class is SSLConnection
    assert not {"ssl", "ssl_cert_reqs"} & set(data_only.sentinel_kwargs)
    sentinels_only = parse_shard("sentinel://h/svc?sentinel_ssl=yes&ssl_ca_certs=/ca.crt", {})
    assert sentinels_only.connection_class is Connection
    assert "ssl_ca_certs" not in sentinels_only.connection_kwargs
    assert sentinels_only.sentinel_kwargs["ssl_ca_certs"] == "/ca.crt"
    plain = parse_shard("sentinel://h/svc", {})
    assert plain.connection_class is Connection and "ssl" not in plain.sentinel_kwargs
    for url, error in (
        ("sentinel://h/svc?ssl_ca_certs=/ca.crt", r"ssl_ca_certs need\(s\) ssl=true"),
        ("sentinel://h/svc?ssl=maybe", r"URL parameter ssl: expected true or false"),
        ("sentinel://h/svc?ssl=true&ssl_bogus=1", r"unknown URL parameter\(s\) ssl_bogus"),
        ("sentinel://h/svc?ssl=true&ssl_cert_reqs=bogus", r"Invalid SSL Certificate"),
    ):
        with pytest.raises(ImproperlyConfigured, match=error):
            parse_shard(url, {})


# -- the command line ------------------------------------------------------------------------


def test_cli_up_tls_prints_rediss_urls(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--dir", str(run)]
    assert main(["up", *argv, "--shards", "1", "--replicas", "0", "--sentinels", "0",
                 "--tls", "--tls-auth-clients", "optional", "--json"]) == 0  # fmt: skip
    try:
        caches = json.loads(capsys.readouterr().out)
        assert caches["default"]["LOCATION"][0].startswith("rediss://")
        assert main(["status", *argv]) == 0  # probed over TLS
        assert Topology.load(run).tls_auth_clients == "optional"
    finally:
        assert main(["down", *argv]) == 0
