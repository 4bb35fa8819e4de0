"""The plans a statement had: a PlanSample per fresh plan the app made of it.

Plans are made when a page needs one (explain.cached_explain, once per data version), so a
statement's samples come now and then, more often when someone is looking. Training gives
each past interval the features of the statement's newest sample at or before it, as
features.query_features does: without them the model never sees a plan, and cannot tell a
plan under a suggested index from today's.
"""

from django.db import connection

from pganalytics.fingerprint import fingerprint
from pganalytics.models import PlanSample, Query

PLAN_FIELDS = ("plan_seq_scans", "plan_total_cost", "plan_rows")  # as in features' names


def plan_figures(summary):
    """{PLAN_FIELDS name: value} of an explain.PlanSummary."""
    return {
        "plan_seq_scans": float(len(summary.seq_scans)),
        "plan_total_cost": summary.total_cost,
        "plan_rows": summary.estimated_rows,
    }


def record(database_id, sql, result):
    """Keep the figures of `result`, a fresh PlanResult of `sql` on the database; nothing for
    a text the database has no Query of (only collected statements are planned)."""
    query_id = Query.objects.filter(
        database_id=database_id, fingerprint=fingerprint(sql).fingerprint
    ).values_list("pk", flat=True).first()
    if query_id is None:
        return
    PlanSample.objects.bulk_create(
        [PlanSample(query_id=query_id, database_id=database_id, taken_at=result.planned_at,
                    **plan_figures(result.summary))],
        ignore_conflicts=True,  # the same plan recorded by two processes at one instant
    )


def newest_at(query, until=None):
    """`query`'s newest PlanSample at or before `until` (default: any), or None."""
    samples = PlanSample.objects.filter(query=query)
    if until is not None:
        samples = samples.filter(taken_at__lte=until)
    return samples.order_by("-taken_at").first()


def history_plan(query, since, until=None):
    """The plan `query`'s intervals from `since` ran under, as far as the kept plans tell:
    its newest PlanSample at or before `since`, else its first one if made by `until` (the
    plan it had then, unless it changed in between: none was made to tell); None."""
    return newest_at(query, since) or PlanSample.objects.filter(
        query=query, **({} if until is None else {"taken_at__lte": until})
    ).order_by("taken_at").first()


def prune(cutoff):
    """Delete samples taken before `cutoff` but each statement's newest one before it: the
    plan of the intervals after the cutoff. The number deleted."""
    table = PlanSample._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} p WHERE taken_at < %(cutoff)s AND EXISTS ("
            f" SELECT 1 FROM {table} n WHERE n.query_id = p.query_id"
            " AND n.taken_at > p.taken_at AND n.taken_at < %(cutoff)s)",
            {"cutoff": cutoff},
        )
        return cursor.rowcount
