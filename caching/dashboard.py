"""What the cache dashboard, its JSON poll and `cache_stats` show: rows, totals, panels."""

from datetime import datetime, timezone

from django.conf import settings
from django.template.defaultfilters import pluralize
from django.utils.module_loading import import_string

from caching import registry

SUMMED = ("entries", "max_entries", "hits", "misses", "evictions", "expirations")


def row(described):
    """One cache, JSON-ready: the backend's class name, TTL in seconds (None: never), the
    last clear as `YYYY-MM-DD HH:MM:SS UTC` (None: never)."""
    last_clear = described["last_clear"]
    return {
        **described,
        "backend": described["backend"].rsplit(".", 1)[-1],
        "last_clear": (
            datetime.fromtimestamp(last_clear, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            if last_clear is not None else None
        ),
    }


def entries(count):
    """`1 entry`, `2 entries`, as the clear messages, the admin log and cache_stats say it."""
    return f"{count} entr{pluralize(count, 'y,ies')}"


def hit_ratio(figures):
    gets = figures["hits"] + figures["misses"]
    return figures["hits"] / gets if gets else 0.0


def totals(rows):
    summed = {field: sum(r[field] for r in rows) for field in SUMMED}
    return {**summed, "hit_ratio": hit_ratio(summed)}


def panels():
    """{title: flat dict} from settings.CACHE_DASHBOARD_PANELS (title -> dotted callable)."""
    configured = getattr(settings, "CACHE_DASHBOARD_PANELS", {})
    return {title: import_string(path)() for title, path in configured.items()}


def snapshot():
    rows = [row(described) for described in registry.describe_all()]
    return {"caches": rows, "totals": totals(rows), "panels": panels()}
