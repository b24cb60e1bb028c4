"""``OrjsonSerializer`` against ``JSONSerializer``: a differential test (each reads the other's
bytes and both read back the same values), and where they differ, on purpose."""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hacache.serializers import JSONSerializer, OrjsonSerializer
from tests.test_values import build

leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
documents = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
stdlib, fast = JSONSerializer(), OrjsonSerializer()


@given(documents)
def test_each_reads_what_the_other_writes(value):
    expected = stdlib.loads(stdlib.dumps(value)) if type(value) is not int else value
    if type(value) is int:  # stored raw, as canonical decimal bytes, by both
        assert stdlib.dumps(value) == fast.dumps(value) == value
        return
    assert fast.loads(fast.dumps(value)) == expected
    assert fast.loads(stdlib.dumps(value)) == expected
    assert stdlib.loads(fast.dumps(value)) == expected


@given(st.dictionaries(st.integers(-1000, 1000) | st.booleans() | st.none(), st.text()))
def test_non_string_keys_become_strings_as_with_json(value):
    assert fast.loads(fast.dumps(value)) == stdlib.loads(stdlib.dumps(value))


@pytest.mark.parametrize(
    "value",
    [{1, 2}, b"bytes", datetime.date(2026, 1, 1), datetime.datetime(2026, 1, 1), object()],
)
def test_what_json_refuses_orjson_refuses(value):
    with pytest.raises(TypeError):
        stdlib.dumps(value)
    with pytest.raises(TypeError):
        fast.dumps(value)


def test_where_they_differ_uuid_enum_and_float_spelling():
    import enum
    import uuid

    class Color(enum.Enum):
        RED = "red"

    some = uuid.UUID(int=1)
    for value in (some, Color.RED):
        with pytest.raises(TypeError):
            stdlib.dumps([value])
    assert fast.loads(fast.dumps([some, Color.RED])) == [str(some), "red"]
    assert stdlib.dumps([1e-07]) != fast.dumps([1e-07])
    assert stdlib.loads(fast.dumps([1e-07])) == fast.loads(stdlib.dumps([1e-07])) == [1e-07]


def test_where_they_differ_nan_and_huge_integers():
    assert math.isnan(stdlib.loads(stdlib.dumps(float("nan"))))
    assert fast.loads(fast.dumps([float("nan"), float("inf")])) == [None, None]
    assert stdlib.loads(stdlib.dumps([2**70])) == [2**70]
    with pytest.raises(TypeError, match="64-bit"):
        fast.dumps([2**70])


def test_a_cache_error_names_the_key(topology):
    cache = build(topology, SERIALIZER="hacache.serializers.OrjsonSerializer")
    with pytest.raises(TypeError, match=r":1:when' \(datetime\)"):
        cache.set("when", datetime.datetime(2026, 1, 1))
    cache.set("ok", {"a": [1, "é"]})
    assert cache.get("ok") == {"a": [1, "é"]}
