"""django-redis's own backend tests, run against hacache: the drop-in claim, checked (issue 12).

``tests/test_backend.py`` (and ``test_backend_sorted_sets.py``) come from the django-redis sdist
on PyPI, downloaded once into ``.venv/downloads/`` (gitignored) and checked against a pinned
hash; nothing of theirs is kept in this repo. They run in a pytest subprocess, next to
``django_redis_suite/suite_conftest.py`` whose ``cache`` fixture is hacache over three real
shards, once plain and once with the near-cache; both modes run at the same time, each on its
own shards (their tests ``clear()``, which flushes every shard).

Every test of theirs must pass, except the few in ``EXCLUDED``: those drive django-redis's
client itself. A skip counts as a failure: the cache hacache presents is neither of the
clients their skips are for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hacache.topology import Topology

REPO = Path(__file__).resolve().parent.parent
VERSION = "7.0.0"
SDIST = f"django_redis-{VERSION}.tar.gz"
SDIST_SHA256 = "e48491c862f4350b0747ceb1016700686fb93c4f4e0fb9c490fe6c6658ffd933"
DOWNLOADS = REPO / ".venv" / "downloads"
BACKEND, ZSETS = "test_backend", "test_backend_sorted_sets"
COLLECTED = {BACKEND: 95, ZSETS: 28}  # in 7.0.0: fewer means something failed to collect
MODES = {"plain": {}, "near": {"NEAR_CACHE": True}}

# Their tests that exercise django-redis's client, not the cache API: not run against hacache.
EXCLUDED = {
    "test_set_call_empty_pipeline": "cache.client.get_client() pipeline, mocked with mocker",
    "test_delete_pattern_with_custom_count": "asserts a call on a mock of RedisCache.client",
    "test_delete_pattern_with_settings_default_scan_count":
        "mock of RedisCache.client; DJANGO_REDIS_SCAN_ITERSIZE",
    "test_close_uninitialized_client": "builds a django-redis RedisCache, not the cache tested",
    "test_close_client": "mocks cache.client.close",
    "test_close_with_signal_parameter": "asserts a call on a mock of RedisCache.client",
    "test_primary_replica_switching": "django-redis client._server/_clients, get_client()",
    "test_primary_replica_switching_with_index": "django-redis get_client_with_index()",
    "test_hash_key_structure_in_redis": "cache.client.get_client() raw client, client.make_key",
}  # fmt: skip


def sdist() -> Path:
    """The pinned sdist, downloaded from PyPI if not already here; skips if that fails off CI."""
    path = DOWNLOADS / SDIST
    if path.exists() and _sha256(path) != SDIST_SHA256:
        path.unlink()  # a partial or foreign file: fetch it again
    if not path.exists():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "--disable-pip-version-check", f"django-redis=={VERSION}", "-d", str(DOWNLOADS)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode != 0 or not path.exists():
            reason = f"could not download django-redis {VERSION}: {result.stderr[-500:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    assert _sha256(path) == SDIST_SHA256, f"{path} is not the django-redis {VERSION} sdist"
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extract(archive: Path, into: Path) -> None:
    """Their two test files, and our conftest beside them."""
    with tarfile.open(archive) as tar:
        for name in (BACKEND, ZSETS):
            member = tar.getmember(f"django_redis-{VERSION}/tests/{name}.py")
            source = tar.extractfile(member)
            assert source is not None
            (into / f"{name}.py").write_bytes(source.read())
    shutil.copy(REPO / "tests" / "django_redis_suite" / "suite_conftest.py", into / "conftest.py")
    (into / "pytest.ini").write_text("[pytest]\n")  # their rootdir, not this repo's settings


def outcomes(junit: Path) -> dict[str, dict[str, tuple[str, str]]]:
    """``{file: {test: (outcome, first line of why)}}`` from a junit-xml report."""
    found: dict[str, dict[str, tuple[str, str]]] = {BACKEND: {}, ZSETS: {}}
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "").split(".")[0]
        outcome, why = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                why = (child.get("message") or child.text or "").strip().splitlines()[:1]
                why = why[0][:200] if why else child.tag
                break
        name = case.get("name", "")
        if module in found and found[module].get(name, ("passed",))[0] == "passed":
            found[module][name] = (outcome, why)  # an error in teardown follows a passed call
    return found


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Both modes' outcomes: two subprocesses at once, each on its own three shards."""
    work = tmp_path_factory.mktemp("django_redis_suite")
    extract(sdist(), work)
    topologies = {mode: Topology(work / f"shards-{mode}", shards=3) for mode in MODES}
    runs: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for mode, options in MODES.items():
            topologies[mode].up()
            cache = {"BACKEND": "hacache.HACache", "LOCATION": topologies[mode].master_urls(),
                     "KEY_PREFIX": f"drsuite-{mode}", "OPTIONS": options}  # fmt: skip
            path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]  # this hacache
            env = {**os.environ, "HACACHE_SUITE_CACHE": json.dumps(cache),
                   "PYTHONPATH": os.pathsep.join(path)}  # fmt: skip
            junit = work / f"{mode}.xml"
            log = (work / f"{mode}.log").open("w")
            runs[mode] = (
                subprocess.Popen(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                     "-p", "no:django", "-p", "no:asyncio", f"--junit-xml={junit}",
                     f"{BACKEND}.py", f"{ZSETS}.py"],
                    cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                ),
                junit,
            )  # fmt: skip
            log.close()
        deadline = time.monotonic() + 180
        for mode, (proc, junit) in runs.items():
            try:
                proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if not junit.exists():
                pytest.fail(f"{mode}: no report; its output:\n{_tail(work / f'{mode}.log')}")
        return {mode: outcomes(junit) for mode, (_, junit) in runs.items()}
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for topology in topologies.values():
            topology.down()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def check(found: dict[str, tuple[str, str]], module: str, excluded: dict[str, str]) -> None:
    """Their tests not excluded all pass (AssertionError naming the others); ``pytest.fail``
    for what is wrong with the run itself."""
    if len(found) != COLLECTED[module]:
        pytest.fail(f"{module}: collected {len(found)}, not {COLLECTED[module]}: {sorted(found)}")
    if not set(excluded) <= set(found):
        pytest.fail(f"stale EXCLUDED: {sorted(set(excluded) - set(found))}")
    for name in sorted(excluded):  # shown with -rA: which excluded tests hacache happens to pass
        print(f"excluded {name}: {found[name][0]}")
    broken = {n: r for n, r in found.items() if n not in excluded and r[0] != "passed"}
    passed = len(found) - len(excluded) - len(broken)
    if broken:
        lines = [f"  {n}: {outcome}: {why}" for n, (outcome, why) in sorted(broken.items())]
        total = len(found) - len(excluded)
        raise AssertionError(f"{module}: {passed}/{total} pass; not passing:\n" + "\n".join(lines))


@pytest.mark.parametrize("mode", MODES)
def test_django_redis_backend_tests_pass(suite_runs: dict[str, dict], mode: str) -> None:
    check(suite_runs[mode][BACKEND], BACKEND, EXCLUDED)


@pytest.mark.parametrize("mode", MODES)
def test_django_redis_sorted_set_tests_pass(suite_runs: dict[str, dict], mode: str) -> None:
    check(suite_runs[mode][ZSETS], ZSETS, {})
