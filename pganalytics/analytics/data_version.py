"""The data version: what the cached answers about a database (or all of them) depend on.

Cached answers carry it (in their key, or as their cache `version`), so a change makes them
unreachable at once without knowing their keys. With the Redis tier it is a token of the
`versions` cache (caching.tokens) that every change moves (changed(), called by collection,
the admin's edits and deletions, compaction): a hit reads it from memory, no database round
trip. Without the tier a token would move in the changing process only, and another worker
would go on serving what it cached before the change: each request then reads it from the
database (stored_version(), two aggregates), as every process sees the same rows.

Every process that changes the data (web workers, `collect`, `compact`) must therefore run
with the same CACHE_L2_URL as the web workers.
"""

from django.db.models import Count, Max
from django.db.models.functions import Now

from caching.tokens import VersionTokens
from pganalytics.models import MonitoredDatabase, Snapshot

ALIAS = "versions"
EVERY_DATABASE = "databases"
tokens = VersionTokens(ALIAS)


def token_name(database_id):
    return EVERY_DATABASE if database_id is None else f"database:{database_id}"


def data_version(database_id=None):
    """The version of the answers about one database, or (None) about all of them."""
    if tokens.shared:
        return tokens.current(token_name(database_id))
    return stored_version(database_id)


def stored_version(database_id=None):
    """The version as the database holds it: the newest snapshot id, and the last change to
    the monitored databases themselves (a rename, a failed collection's error, a deleted
    snapshot, one added or removed)."""
    snapshots, monitored = Snapshot.objects.all(), MonitoredDatabase.objects.all()
    if database_id is not None:
        snapshots = snapshots.filter(database_id=database_id)
        monitored = monitored.filter(pk=database_id)
    newest = snapshots.aggregate(newest=Max("id"))["newest"] or 0
    changed = monitored.aggregate(changed=Max("updated_at"), count=Count("id"))
    stamp = changed["changed"].timestamp() if changed["changed"] else 0
    return f"{newest}.{stamp}.{changed['count']}"


def changed(database_id):
    """The answers about `database_id` change with the current transaction (at once outside
    one): its version and every database's move once it commits. The stored version moves
    with the rows (a snapshot, `updated_at`)."""
    tokens.move(EVERY_DATABASE, token_name(database_id))


def every_database_changed():
    """The answers about every database change (compaction dropped history): both versions
    move, the stored one by stamping every database."""
    ids = list(MonitoredDatabase.objects.values_list("id", flat=True))
    MonitoredDatabase.objects.update(updated_at=Now())
    tokens.move(EVERY_DATABASE, *(token_name(each) for each in ids))
