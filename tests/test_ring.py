"""The hash ring: deterministic, balanced, and minimal movement when shards come and go."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacache.ring import HashRing, fnv1a_64, hash_tag, md5_32

PLACEMENTS = ("consistent", "ketama")
names = st.lists(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    min_size=1,
    max_size=12,
    unique=True,
)
keys = st.lists(st.text(max_size=60), min_size=1, max_size=200)


def sample_keys(n: int = 20_000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice('abcdef')}:{rng.getrandbits(40)}:{i}" for i in range(n)]


def shares(ring: HashRing, sample: list[str]) -> Counter:
    return Counter(ring.node_for(k) for k in sample)


@pytest.mark.parametrize("placement", PLACEMENTS)
@given(names=names, keys=keys, seed=st.integers(0, 2**32))
@settings(max_examples=40, deadline=None)
def test_placement_ignores_shard_order(placement, names, keys, seed):
    shuffled = names[:]
    random.Random(seed).shuffle(shuffled)
    a = HashRing(names, placement=placement)
    b = HashRing(shuffled, placement=placement)
    assert [a.node_for(k) for k in keys] == [b.node_for(k) for k in keys]


def test_placement_is_pinned():
    """Placements must never change between releases: every process must agree."""
    ring = HashRing(["shard0", "shard1", "shard2"])
    assert [ring.node_for(k) for k in ("a", "b", "user:42", ":1:views.decorators", "ü")] == (
        PINNED_CONSISTENT
    )
    ketama = HashRing(["shard0", "shard1", "shard2"], placement="ketama")
    assert [ketama.node_for(k) for k in ("a", "b", "user:42", ":1:views.decorators", "ü")] == (
        PINNED_KETAMA
    )


PINNED_CONSISTENT = ["shard1", "shard2", "shard2", "shard2", "shard2"]
PINNED_KETAMA = ["shard1", "shard1", "shard2", "shard2", "shard1"]


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("count", range(2, 17))
def test_balance_within_25_percent_of_fair(placement, count):
    sample = sample_keys()
    ring = HashRing([f"redis-{i}.example:6379" for i in range(count)], placement=placement)
    fair = len(sample) / count
    got = shares(ring, sample)
    assert len(got) == count
    for share in got.values():
        assert 0.75 * fair <= share <= 1.25 * fair


@pytest.mark.parametrize("placement", PLACEMENTS)
@given(count=st.integers(2, 16), seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_adding_a_shard_moves_about_one_nth_and_only_onto_it(placement, count, seed):
    sample = sample_keys(5000, seed)
    before = HashRing([f"s{i}" for i in range(count)], placement=placement)
    after = HashRing([f"s{i}" for i in range(count + 1)], placement=placement)
    moved = [k for k in sample if before.node_for(k) != after.node_for(k)]
    assert all(after.node_for(k) == f"s{count}" for k in moved)
    expected = len(sample) / (count + 1)
    assert 0.6 * expected <= len(moved) <= 1.4 * expected


@pytest.mark.parametrize("placement", PLACEMENTS)
@given(count=st.integers(3, 16), seed=st.integers(0, 1000), data=st.data())
@settings(max_examples=25, deadline=None)
def test_removing_a_shard_moves_only_its_keys(placement, count, seed, data):
    sample = sample_keys(5000, seed)
    gone = f"s{data.draw(st.integers(0, count - 1))}"
    before = HashRing([f"s{i}" for i in range(count)], placement=placement)
    after = HashRing([f"s{i}" for i in range(count) if f"s{i}" != gone], placement=placement)
    for k in sample:
        if before.node_for(k) != gone:
            assert after.node_for(k) == before.node_for(k)
        else:
            assert after.node_for(k) != gone


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_weights(placement):
    sample = sample_keys()
    ring = HashRing({"small": 1, "big": 3}, placement=placement)
    got = shares(ring, sample)
    assert 2.4 <= got["big"] / got["small"] <= 3.6


def test_ketama_point_counts_follow_the_reference_formula():
    ring = HashRing(["a", "b", "c"], placement="ketama")
    assert len(ring._points) == 3 * 160
    weighted = HashRing({"a": 1, "b": 2}, placement="ketama")
    # floor(w / total * 160 / 4 * n) digests of 4 points each: 26 and 53 digests.
    assert Counter(weighted._owners) == {"a": 26 * 4, "b": 53 * 4}


def test_vnodes_set_the_ring_size():
    assert len(HashRing(["a", "b"], vnodes=10)._points) == 20
    assert len(HashRing({"a": 1, "b": 2}, vnodes=10)._points) == 30


def test_hash_tags():
    ring = HashRing([f"s{i}" for i in range(8)], hash_tags=True)
    assert len({ring.node_for(f"{{user:{7}}}:field{i}") for i in range(50)}) == 1
    assert ring.node_for("{user:7}:a") == ring.node_for("user:7")
    assert hash_tag("x{}y{z}") == "x{}y{z}"  # an empty tag means: hash the whole key
    assert hash_tag("a{b}c{d}") == "b"
    assert hash_tag("no tag") == "no tag"
    untagged = HashRing([f"s{i}" for i in range(8)])
    assert len({untagged.node_for(f"{{user:{7}}}:field{i}") for i in range(50)}) > 1


def test_key_hashes():
    # twemproxy's fnv1a_64 on the empty string is its (truncated) offset basis.
    assert fnv1a_64(b"") == 0x84222325
    assert fnv1a_64(b"a") == ((0x84222325 ^ 0x61) * 0x1B3) & 0xFFFFFFFF
    # bytes >= 0x80 are sign-extended, as C's signed char does.
    assert fnv1a_64(b"\xff") == ((0x84222325 ^ 0xFFFFFFFF) * 0x1B3) & 0xFFFFFFFF
    assert md5_32(b"") == int.from_bytes(bytes.fromhex("d41d8cd9"), "little")


def test_bad_rings_are_refused():
    with pytest.raises(ValueError):
        HashRing([])
    with pytest.raises(ValueError):
        HashRing({"a": 0})
    with pytest.raises(ValueError):
        HashRing(["a"], placement="modulo")
