"""Write every item key the load test will read, through the back-end under test.

Run by ``run.py`` in a child process (Django is configured once per process, and each back-end
needs its own settings)::

    HACACHE_CACHES_FILE=caches.json python -m loadtests.prefill --keys 10000 --value-bytes 512

Going through the back-end, not raw Redis, means each client finds keys in its own format.
"""

from __future__ import annotations

import argparse
import os
import time

from loadtests.workload import item_key, item_value

BATCH = 500


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--value-bytes", type=int, required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django.core.cache import cache

    from testproject.views import item_cache_key

    started = time.perf_counter()
    for first in range(0, args.keys, BATCH):
        ranks = range(first, min(first + BATCH, args.keys))
        values = {
            item_cache_key(item_key(r)): item_value(f"prefill{r}", args.value_bytes) for r in ranks
        }
        failed = cache.set_many(values, timeout=None)  # must outlive the run
        if failed:
            raise SystemExit(f"prefill: set_many failed for {len(failed)} keys")
    probe = item_cache_key(item_key(args.keys - 1))
    if cache.get(probe) is None:
        raise SystemExit(f"prefill: {probe} not readable after writing it")
    print(f"prefilled {args.keys} keys in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
