"""`bench_cache`: TTLLRUCache against Django's LocMemCache (and Redis) on one workload, one run."""

import json
import os

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from caching import benchmark

REFERENCE = "LocMemCache"


class Command(BaseCommand):
    help = (
        "Replays one read-through workload (80%% of reads on 20%% of the keys, a miss is "
        "followed by a set, a small dict value) on TTLLRUCache and LocMemCache through the "
        "Django cache API and prints ops/s and the ratio to LocMemCache; --eviction times "
        "sets into full caches of two sizes instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("--keys", type=int, default=10_000, help="distinct keys")
        parser.add_argument("--reads", type=int, default=200_000, help="reads per round")
        parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept")
        parser.add_argument(
            "--redis", metavar="URL", help="also run TieredCache over that Redis, and RedisCache"
        )
        parser.add_argument("--eviction", action="store_true", help="run the eviction mode")
        parser.add_argument(
            "--sizes",
            default="1000,1000000",
            help="eviction mode: full-cache sizes, smallest first (default 1000,1000000)",
        )
        parser.add_argument("--sets", type=int, default=200_000, help="eviction mode: sets")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args, **options):
        for name in ("keys", "reads", "rounds", "sets"):
            if options[name] < 1:
                raise CommandError(f"--{name} must be at least 1")
        pairs = self.eviction(options) if options["eviction"] else self.read_through(options)
        self.report(pairs, options["json"])

    def read_through(self, options):
        keys = benchmark.hot_cold_keys(options["keys"], options["reads"])
        kinds = ["LocMemCache", "TTLLRUCache"]
        if options["redis"]:
            kinds += ["TieredCache", "RedisCache"]
        best = {}
        with tqdm(total=len(kinds) * options["rounds"] * len(keys), unit="op", leave=False) as bar:
            for round_number in range(options["rounds"]):
                for kind in kinds:
                    cache = benchmark.make_backend(
                        kind,
                        f"bench-{os.getpid()}-{round_number}-{kind}",  # runs share Redis
                        max_entries=2 * options["keys"],
                        redis_url=options["redis"],
                    )
                    result = benchmark.run_read_through(cache, keys, kind, bar.update)
                    benchmark.discard(cache, keys)
                    cache.close()
                    if kind not in best or result.seconds < best[kind].seconds:
                        best[kind] = result
        return [(result, best[REFERENCE]) for result in best.values()]

    def eviction(self, options):
        try:
            sizes = [int(size) for size in options["sizes"].split(",")]
        except ValueError:
            raise CommandError(f"--sizes={options['sizes']!r}: expected numbers such as 1000,1000000")
        pairs, smallest = [], {}
        with tqdm(total=2 * len(sizes) * options["sets"], unit="set", leave=False) as bar:
            for kind in ("LocMemCache", "TTLLRUCache"):
                for size in sizes:
                    # CULL_FREQUENCY == MAX_ENTRIES: each new key evicts exactly one LRU entry,
                    # as the named caches are configured.
                    cache = benchmark.make_backend(
                        kind, f"evict-{size}-{kind}", max_entries=size, cull_frequency=size
                    )
                    label = f"{kind} full at {size:,}"
                    result = benchmark.run_full_cache_sets(
                        cache, size, options["sets"], label, bar.update
                    )
                    cache.clear()
                    smallest.setdefault(kind, result)
                    pairs.append((result, smallest[kind]))
        return pairs

    def report(self, pairs, as_json):
        """One row per result with its ratio to its reference (LocMem, or the smallest size)."""
        rows = [
            {
                "backend": result.backend,
                "ops": result.ops,
                "ops_per_second": round(result.ops_per_second),
                "us_per_op": round(result.us_per_op, 3),
                "hit_ratio": None if result.hit_ratio is None else round(result.hit_ratio, 4),
                "reference": reference.backend,
                "ratio": round(result.ops_per_second / reference.ops_per_second, 2),
            }
            for result, reference in pairs
        ]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        self.stdout.write(f"{'backend':<32} {'ops/s':>12} {'us/op':>8} {'hit ratio':>9}  ratio")
        for row in rows:
            hit_ratio = "-" if row["hit_ratio"] is None else f"{row['hit_ratio']:.1%}"
            self.stdout.write(
                f"{row['backend']:<32} {row['ops_per_second']:>12,} {row['us_per_op']:>8.3f} "
                f"{hit_ratio:>9}  {row['ratio']:.2f}x {row['reference']}"
            )
