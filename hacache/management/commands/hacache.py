"""``manage.py hacache status|ring|locate KEY|flush-near|warm|reshard``: look at a hacache
alias, warm it, move its keys after a ring change.

Thin on purpose: the questions are ``hacache.inspection``'s, the warm-ups ``hacache.warmup``'s,
the moves ``hacache.mover``'s, the text ``hacache.report``'s. ``status`` exits 1 when any
shard's master is unreachable; ``warm`` exits 1 when a warm-up raised or keys were not stored;
``reshard`` exits 1 when keys are left to move; ``flush-near --all-processes`` exits 1 when a
shard's flush could not be published; ``warm`` and ``reshard`` exit 130 on Ctrl-C.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hacache import inspection, progress, report, warmup


class Command(BaseCommand):
    help = "Inspect a hacache cache alias: status, ring, locate KEY, flush-near; warm it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--alias", default=None, help="CACHES alias (default: default)")
        parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="every shard's servers, Sentinel's view, breakers")
        ring = sub.add_parser("ring", help="shards, weights, ring points, measured key share")
        ring.add_argument("--sample", type=int, default=10_000, help="random keys to place")
        locate = sub.add_parser("locate", help="where a cache key lives, whether it exists")
        locate.add_argument("key")
        locate.add_argument("--version", type=int, default=None, dest="key_version")
        flush = sub.add_parser(
            "flush-near",
            help="empty this process's near-cache; with --all-processes, every process's",
        )
        flush.add_argument(
            "--all-processes", action="store_true",
            help="publish a flush on every shard's invalidation bus: every process drops them",
        )  # fmt: skip
        warm = sub.add_parser("warm", help="run the registered warm-up functions")
        warm.add_argument("--alias", dest="warm_alias", help="only this alias's (default: all)")
        warm.add_argument("--only", nargs="+", action="extend", default=[], metavar="NAME")
        warm.add_argument("--batch", type=int, default=warmup.BATCH, help="keys per set_many")
        warm.add_argument("--rate", type=float, metavar="KEYS_PER_S", help="at most, overall")
        warm.add_argument("--dry-run", action="store_true", help="run them, write nothing")
        warm.add_argument("--list", action="store_true", dest="list_only", help="only list them")
        warm.add_argument("--json", action="store_true", dest="warm_json", help="JSON summary")
        reshard = sub.add_parser("reshard", help="move keys to their owners after a ring change")
        reshard.add_argument("--batch", type=int, default=500, help="keys per SCAN step")
        reshard.add_argument("--rate", type=float, metavar="KEYS_PER_S", help="keys scanned/s")
        reshard.add_argument("--check", action="store_true", help="only count keys left to move")
        reshard.add_argument("--restart", action="store_true", help="ignore saved progress")
        reshard.add_argument(
            "--all-keys", action="store_true", help="every key of the db, not only the alias's"
        )
        reshard.add_argument("--json", action="store_true", dest="reshard_json")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "warm":
            return self._warm(options)
        alias = options["alias"] or "default"
        _check_alias(alias)
        as_json = options["json"]
        if action == "reshard":
            return self._reshard(alias, options, as_json or options["reshard_json"])
        if action == "status":
            shards = inspection.status(alias)
            if as_json:
                self._json([{**asdict(s), "ok": s.ok} for s in shards])
            else:
                self.stdout.write(report.status_text(shards))
            if not all(s.ok for s in shards):
                raise SystemExit(1)
        elif action == "ring":
            if options["sample"] < 1:
                raise CommandError("--sample must be at least 1")
            shares = inspection.ring(alias, options["sample"])
            placement = inspection.router_for(alias).options.placement
            if as_json:
                self._json({"placement": placement, "shards": [asdict(s) for s in shares]})
            else:
                self.stdout.write(report.ring_text(shares, options["sample"], placement))
        elif action == "locate":
            found = inspection.locate(options["key"], alias, options["key_version"])
            if as_json:
                self._json(asdict(found))
            else:
                self.stdout.write(report.locate_text(found))
        elif options["all_processes"]:  # flush-near --all-processes
            self._flush_everywhere(alias, as_json)
        else:  # flush-near
            self._flush_near(alias, as_json)

    def _flush_everywhere(self, alias: str, as_json: bool) -> None:
        outcome = inspection.flush_near_everywhere(alias)
        failed = sorted(name for name, said in (outcome or {}).items() if said != "ok")
        if as_json:
            self._json({"near_cache": outcome is not None, "shards": outcome or {}})
        elif outcome is None:
            self.stdout.write(f"CACHES[{alias!r}] has no near-cache: nothing to flush.")
        else:
            for name, said in outcome.items():
                self.stdout.write(f"shard {name}: {'flush published' if said == 'ok' else said}")
            missed = f"; not for {', '.join(failed)}" if failed else ""
            self.stdout.write(
                f"Every process with a near-cache for {alias!r} drops its entries of the shards "
                f"above as the message arrives{missed}."
            )
        if failed:
            raise SystemExit(1)

    def _flush_near(self, alias: str, as_json: bool) -> None:
        dropped = inspection.flush_near(alias)
        if as_json:
            self._json({"near_cache": dropped is not None, "dropped": dropped or 0})
        elif dropped is None:
            self.stdout.write(f"CACHES[{alias!r}] has no near-cache: nothing to flush.")
        else:
            self.stdout.write(
                f"Flushed this process's near-cache for {alias!r} ({dropped} entries). Other "
                "processes are not affected: their near-caches empty on clear(), on a write's "
                "invalidation, or within NEAR_CACHE_TTL."
            )

    def _warm(self, options: dict[str, Any]) -> None:
        alias = options["warm_alias"] or options["alias"]
        as_json = options["json"] or options["warm_json"]
        if options["batch"] < 1 or (options["rate"] is not None and options["rate"] <= 0):
            raise CommandError("--batch must be at least 1 and --rate above 0")
        try:
            chosen = warmup.select(alias, options["only"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for name in sorted({w.alias for w in chosen} | ({alias} if alias else set())):
            _check_alias(name)
        if options["list_only"]:
            if as_json:
                self._json([report.warmup_dict(w) for w in chosen])
            else:
                self.stdout.write(report.warmups_text(chosen))
            return
        shown = progress.for_stream(self.stderr, quiet=as_json)
        done = warmup.run(
            chosen, batch=options["batch"], rate=options["rate"], dry_run=options["dry_run"],
            progress=shown,
        )  # fmt: skip
        if as_json:
            self._json(done.as_dict())
        else:
            self.stdout.write(report.warm_text(done) if chosen else report.warmups_text(chosen))
        if done.interrupted:
            raise SystemExit(130)
        if not done.ok:
            raise SystemExit(1)

    def _reshard(self, alias: str, options: dict[str, Any], as_json: bool) -> None:
        from django.core.cache import caches

        from hacache.mover import Mover, key_pattern

        cache = caches[alias]
        if cache._router.previous_ring is None:
            raise CommandError(f"CACHES[{alias!r}] has no PREVIOUS_LOCATION: nothing to move")
        if options["batch"] < 1 or (options["rate"] is not None and options["rate"] <= 0):
            raise CommandError("--batch must be at least 1 and --rate above 0")
        pattern = "*" if options["all_keys"] else key_pattern(cache)
        mover = Mover(cache._router, pattern, options["batch"], options["rate"])
        if options["check"]:
            left = mover.left_to_move()
            if as_json:
                self._json({"left_to_move": left, "previous_location_removable": left == 0})
            else:
                self.stdout.write(report.reshard_left_text(alias, left))
            raise SystemExit(1 if left else 0)
        shown = progress.for_stream(self.stderr, quiet=as_json)
        shown.start(f"{alias}: reshard", 2 * mover.estimate())  # two passes over every key
        try:
            summary = mover.run(lambda _, scanned: shown.advance(scanned), options["restart"])
        except KeyboardInterrupt:
            shown.finish("interrupted")
            self.stdout.write("Interrupted: progress is saved on each shard; run again to resume.")
            raise SystemExit(130) from None
        shown.finish()
        if as_json:
            self._json(summary.as_dict())
        else:
            self.stdout.write(report.reshard_text(alias, summary))
        if summary.left_to_move:
            raise SystemExit(1)

    def _json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2))


def _check_alias(alias: str) -> None:
    if alias not in settings.CACHES:
        raise CommandError(f"no cache alias {alias!r} in CACHES")
    if not any(a == alias for a, _ in inspection_aliases()):
        raise CommandError(f"CACHES[{alias!r}] is not a hacache backend")


def inspection_aliases() -> list[tuple[str, Any]]:
    from hacache.checks import hacache_aliases

    return list(hacache_aliases())
