"""The cache back-ends under test, each as a Django ``CACHES`` dict built from the shard URLs.

Every back-end gets the same Redis servers (the first shard for the single-server baseline), the
same default TIMEOUT and no KEY_PREFIX, so the only difference between runs is the client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Sentinel set-ups (the failover scenario): fail fast on a dead socket, wait out a promotion.
HA_OPTIONS = {"FAILOVER_TIMEOUT": 3, "SOCKET_TIMEOUT": 0.25, "SOCKET_CONNECT_TIMEOUT": 0.25}
# The other side of the trade-off: the default FAILOVER_TIMEOUT (0) and failing open.
OPEN_OPTIONS = {"FAIL_OPEN": True, "SOCKET_TIMEOUT": 0.25, "SOCKET_CONNECT_TIMEOUT": 0.25}


def sentinels_of(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` list of a ``sentinel://h1:p1,h2:p2/service/db`` URL."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    return [(h, int(p)) for h, _, p in (item.rpartition(":") for item in hosts.split(","))]


def django_redis_sentinel(urls: list[str]) -> dict[str, Any]:
    """django-redis's SentinelClient follows one Sentinel service per cache: shard0 alone."""
    service = urlsplit(urls[0]).path.strip("/").split("/")[0]
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://{service}/0",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.SentinelClient",
            "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
            "SENTINELS": sentinels_of(urls[0]),
            "SOCKET_TIMEOUT": 0.25,
            "SOCKET_CONNECT_TIMEOUT": 0.25,
        },
    }


def strip_name(url: str) -> str:
    """Drop hacache's own ``name=``/``weight=`` query parameters, which other clients refuse."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("name", "weight")]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class Backend:
    name: str
    label: str  # how tables and plots name it
    description: str
    build: Callable[[list[str]], dict[str, Any]]  # shard URLs -> the "default" CACHES entry

    def caches(self, urls: list[str]) -> dict[str, Any]:
        return {"default": self.build(urls)}


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            "hacache",
            "hacache",
            "hacache.HACache on 3 shards, near-cache off",
            lambda urls: {"BACKEND": "hacache.HACache", "LOCATION": urls},
        ),
        Backend(
            "hacache-near",
            "hacache + near-cache",
            'hacache.HACache on 3 shards, OPTIONS {"NEAR_CACHE": true}',
            lambda urls: {
                "BACKEND": "hacache.HACache",
                "LOCATION": urls,
                "OPTIONS": {"NEAR_CACHE": True},
            },
        ),
        Backend(
            "hacache-near-tuned",
            "hacache + tuned near-cache",
            "hacache.HACache on 3 shards, near-cache on except for sessions and the counter "
            "(keys written about as often as read, which a near-cache can only slow down)",
            lambda urls: {
                "BACKEND": "hacache.HACache",
                "LOCATION": urls,
                "OPTIONS": {
                    "NEAR_CACHE": True,
                    "NEAR_CACHE_EXCLUDE": ["*:django.contrib.sessions.cache*", "*:counter:*"],
                },
            },
        ),
        Backend(
            "django",
            "Django RedisCache",
            "django.core.cache.backends.redis.RedisCache on shard 0 alone",
            lambda urls: {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": strip_name(urls[0]),
            },
        ),
        Backend(
            "django-redis-shard",
            "django-redis ShardClient",
            "django_redis.cache.RedisCache with CLIENT_CLASS ShardClient on the same 3 shards",
            lambda urls: {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": [strip_name(u) for u in urls],
                "OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient"},
            },
        ),
        Backend(
            "hacache-sentinel",
            "hacache via Sentinel",
            f"hacache.HACache on 3 Sentinel-monitored shards, OPTIONS {json.dumps(HA_OPTIONS)}",
            lambda urls: {"BACKEND": "hacache.HACache", "LOCATION": urls, "OPTIONS": HA_OPTIONS},
        ),
        Backend(
            "hacache-near-sentinel",
            "hacache + near-cache via Sentinel",
            "hacache.HACache on 3 Sentinel-monitored shards, the same OPTIONS plus NEAR_CACHE",
            lambda urls: {
                "BACKEND": "hacache.HACache",
                "LOCATION": urls,
                "OPTIONS": {**HA_OPTIONS, "NEAR_CACHE": True},
            },
        ),
        Backend(
            "hacache-open-sentinel",
            "hacache fail-open via Sentinel",
            f"hacache.HACache on 3 Sentinel-monitored shards, OPTIONS {json.dumps(OPEN_OPTIONS)}"
            " (writes never wait for the promotion; failed ones are dropped)",
            lambda urls: {"BACKEND": "hacache.HACache", "LOCATION": urls, "OPTIONS": OPEN_OPTIONS},
        ),
        Backend(
            "django-redis-sentinel",
            "django-redis SentinelClient",
            "django_redis.cache.RedisCache with CLIENT_CLASS SentinelClient on shard0 alone "
            "(one Sentinel service per cache), socket timeouts 0.25 s",
            django_redis_sentinel,
        ),
    )
}

BASELINE = "django"  # ratios in every table are against Django's own RedisCache
# What a plain run compares: the four set-ups (the tuned variant is opt-in).
DEFAULT_BACKENDS = ["hacache", "hacache-near", "django", "django-redis-shard"]
