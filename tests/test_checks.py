"""System checks: each hacache.E00x/W00x fires on its setting (and only there), and
``manage.py check`` prints them instead of crashing with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hacache.checks import check_alias, check_caches

REPO = Path(__file__).resolve().parent.parent
GOOD = "redis://127.0.0.1:6379/0"
SENTINELS = "sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/svc/0"


def ids(location, options=None) -> list[str]:
    params = {"BACKEND": "hacache.HACache", "LOCATION": location}
    if options is not None:
        params["OPTIONS"] = options
    return sorted(message.id for message in check_alias("x", params))


def test_a_sound_setting_has_nothing_to_report():
    assert ids(GOOD) == []
    assert ids([SENTINELS], {"FAIL_OPEN": True, "NEAR_CACHE": True}) == []


@pytest.mark.parametrize(
    ("location", "options", "expected"),
    [
        (GOOD, {"SOCKET_TIMOUT": 1}, ["hacache.E001"]),
        (GOOD, {"NEAR_CACHE_TTL": 1, "NEAR_CACHE": False}, ["hacache.E001"]),
        (["redis://a:1?name=x", "redis://b:2?name=x"], None, ["hacache.E002"]),
        (["redis://a:1", "redis://a:1"], None, ["hacache.E002"]),
        ("http://h:1", None, ["hacache.E003"]),
        (["redis://h?bogus=1", "memcached://h"], None, ["hacache.E003", "hacache.E003"]),
        ([], None, ["hacache.E003"]),
        (GOOD, {"SOCKET_TIMEOUT": float("nan")}, ["hacache.E004"]),
        (GOOD, {"SOCKET_CONNECT_TIMEOUT": float("inf")}, ["hacache.E004"]),
        (GOOD, {"HEDGE_DELAY": float("nan")}, ["hacache.E004"]),
        (GOOD, {"SOCKET_TIMEOUT": -1}, ["hacache.E004"]),
        (GOOD, {"CONNECTION_OPTIONS": {"socket_timeout": float("nan")}}, ["hacache.E004"]),
        ("redis://h:1?socket_timeout=inf", None, ["hacache.E004"]),
        ("redis://h:1?weight=0", None, ["hacache.E005"]),
        ("redis://h:1?weight=-2", None, ["hacache.E005"]),
        ("redis://h:1?weight=100000", None, ["hacache.E005"]),
        # Errors in LOCATION and in OPTIONS are both reported.
        ("http://h:1", {"VNODE": 1}, ["hacache.E001", "hacache.E003"]),
        # What used to pass the checks and fail at first use.
        ("redis://h:1?socket_timeout=-1", None, ["hacache.E004"]),
        ("redis://h:1?socket_connect_timeout=nan", None, ["hacache.E004"]),
        ("sentinel://s/svc?socket_timeout=-1", None, ["hacache.E004"]),
        (GOOD, {"CONNECTION_OPTIONS": {"socket_timeout": -1}}, ["hacache.E004"]),
        (GOOD, {"SOCKET_TIMEOUT": float("nan"), "POOL_TIMEOUT": -1}, ["hacache.E004"] * 2),
        ("redis://h:1/-1", None, ["hacache.E003"]),
        ("redis://h:1/abc", None, ["hacache.E003"]),
        ("sentinel://s/svc?socket_timeout=abc", None, ["hacache.E004"]),
        ("sentinel://s/svc?protocol=9", None, ["hacache.E003"]),
        ("redis://[::1:6379", None, ["hacache.E003"]),
        ("sentinel://[::1:26379/svc", None, ["hacache.E003"]),
        ("rediss://h:1?ssl_bogus=1", None, ["hacache.E003"]),
        ("rediss://h:1?ssl_cert_reqs=bogus", None, ["hacache.E003"]),
        ("redis://h:1?ssl_cert_reqs=none", None, ["hacache.E003"]),
        (GOOD, {"CONNECTION_OPTIONS": {"ssl_bogus": 1}}, ["hacache.E001"]),
        ("redis://h:1?weight=1001", None, ["hacache.E005"]),
        (GOOD, {"VNODES": 10_001}, ["hacache.E005"]),
        (["redis://a:1?weight=1000", "redis://b:1?weight=1000"], None, ["hacache.E005"]),
        (
            ["redis://a:1?weight=1001", "redis://b:1/x", "redis://c:1?db=-1"],
            None,
            ["hacache.E003", "hacache.E003", "hacache.E005"],
        ),
    ],
)
def test_errors(location, options, expected):
    assert ids(location, options) == expected


@pytest.mark.parametrize(
    ("location", "options", "expected"),
    [
        (GOOD, {"NEAR_CACHE": True, "PUBLISH_INVALIDATIONS": False}, ["hacache.W001"]),
        (["sentinel://127.0.0.1:26379/svc/0"], {"FAIL_OPEN": True}, ["hacache.W002"]),
        ([SENTINELS], None, ["hacache.W003"]),
        (GOOD, {"CONNECTION_OPTIONS": {"socket_timeout": None}}, ["hacache.W004"]),
        (GOOD, {"SOCKET_TIMEOUT": 30}, ["hacache.W004"]),
        ("redis://h:1?socket_connect_timeout=60", None, ["hacache.W004"]),
    ],
)
def test_warnings(location, options, expected):
    assert ids(location, options) == expected


def test_messages_name_the_alias_and_never_a_password():
    params = {"BACKEND": "hacache.HACache", "LOCATION": "redis://:s3cret@h:1?bogus=1"}
    (message,) = check_alias("sessions", params)
    assert message.id == "hacache.E003" and message.hint
    assert "CACHES['sessions']" in message.msg and "s3cret" not in message.msg
    params["LOCATION"] = "redis://:s3cret@h:1?weight=0"
    (message,) = check_alias("sessions", params)
    assert message.id == "hacache.E005" and "s3cret" not in message.msg


def test_messages_say_what_was_expected():
    def text(location, options=None):
        params = {"BACKEND": "hacache.HACache", "LOCATION": location, "OPTIONS": options}
        (message,) = check_alias("x", params)
        return f"{message.id} {message.msg} HINT: {message.hint}"

    assert "db must be an integer >= 0, got 'abc'" in text("redis://h/abc")
    assert "socket_timeout: expected a finite number of seconds > 0" in text(
        "redis://h?socket_timeout=-1"
    )
    assert "at most 200,000" in text(GOOD, {"VNODES": 10_001})
    assert "1 to 1000" in text("redis://h?weight=5000")
    assert "320,000 ring points" in text(["redis://a:1?weight=1000", "redis://b:1?weight=1000"])


def test_only_hacache_entries_are_checked(settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "other": {"BACKEND": "hacache.HACache", "LOCATION": "redis://h?weight=0"},
    }
    assert [m.id for m in check_caches()] == ["hacache.E005"]


def _manage(tmp_path: Path, caches: str, *args: str, installed: bool = True):
    (tmp_path / "check_settings.py").write_text(
        "from testproject.settings import *\n"
        + ("" if installed else "INSTALLED_APPS = []\n")
        + f"CACHES = {caches}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
        "DJANGO_SETTINGS_MODULE": "check_settings",
    }
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


BAD = (
    "{'default': {'BACKEND': 'hacache.HACache', 'LOCATION': 'redis://h', 'OPTIONS': {'VNODE': 1}}}"
)


def test_without_the_app_django_s_own_cache_check_crashes(tmp_path):
    """What hacache's checks are for: Django's check builds the backend and dies on it."""
    result = _manage(tmp_path, BAD, "check", installed=False)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "check_file_based_cache_is_absolute" in result.stderr


def test_manage_py_check_prints_the_hacache_check_not_a_traceback(tmp_path):
    result = _manage(tmp_path, BAD, "check")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "(hacache.E001) CACHES['default']: OPTIONS['VNODE']: unknown option" in result.stderr
    assert "Did you mean 'VNODES'?" in result.stderr and "HINT:" in result.stderr


def test_manage_py_check_shows_warnings_and_passes(tmp_path):
    caches = (
        "{'default': {'BACKEND': 'hacache.HACache', 'LOCATION': 'redis://h',"
        " 'OPTIONS': {'SOCKET_TIMEOUT': 60}}}"
    )
    result = _manage(tmp_path, caches, "check")
    assert result.returncode == 0, result.stderr
    assert "hacache.W004" in result.stderr + result.stdout
