"""The demo: a sample database, a varied workload, real snapshots and a model, in about 30 s.

It monitors `<app database>_demo` (`pganalytics_demo` by default) on the app's own server
under the name `demo` and plays a small shop's traffic between snapshots: fast indexed
lookups, seq scans of an unindexed table that grows every interval, aggregates, a join,
writes. Two things change, as they do in production: once the anomaly baseline has its
intervals an index is dropped (orders-by-customer lookups turn into seq scans and regress: an
anomaly until, some 20 intervals on, the regression is most of its baseline, the new normal),
and near the end the email lookups' call rate jumps twentyfold (an anomaly at the end). The
index advisor suggests the lost index back, verified by a what-if plan:
the demo creates hypopg in its database where the server has it.

After each snapshot it plans the collected statements as their query pages would (the cached
EXPLAIN), so their plans are kept before and after the index drop, and at the end it trains
the latency model on that history as `manage.py train_model --save` does: made current only
if it beats the better baseline on the held-out part (the ML service loads it at start).

Running it again starts over: the schema is recreated, the demo database's statistics are
reset (for that database only: others on the server are monitored or tested too) and its
earlier snapshots are deleted.
"""

import math
import random
import time
from datetime import timedelta

import psycopg
from django.conf import settings
from django.template.defaultfilters import pluralize

from mlservice import store, training
from pganalytics.analytics import services
from pganalytics.analytics.collector import collect
from pganalytics.analytics.data_version import data_version
from pganalytics.models import MonitoredDatabase
from pganalytics.targets import ensure_database, local_dsn, reset_statements

DEMO_NAME = "demo"
DEFAULT_SNAPSHOTS = 40  # ~350 examples: training needs 200, and 11 gave 81
CUSTOMERS, ORDERS, EVENTS = 20_000, 100_000, 50_000
EVENTS_GROWTH_PER_ROUND = 25_000
REGRESSED_INDEX = "orders_customer"
EVENT_KINDS = ("view", "cart", "checkout", "refund", "login")
COUNTRIES = ("fr", "de", "us", "jp", "br")
WORDS = ("alpha", "bravo", "delta", "kilo", "oscar", "tango", "zulu")

SCHEMA = """
DROP TABLE IF EXISTS events, orders, customers;
CREATE TABLE customers (
    id int PRIMARY KEY, email text NOT NULL UNIQUE, country text NOT NULL,
    created_at timestamptz NOT NULL);
INSERT INTO customers
    SELECT i, 'customer' || i || '@example.com', (ARRAY['fr', 'de', 'us', 'jp', 'br'])[1 + i % 5],
           now() - i * interval '1 hour'
    FROM generate_series(1, {customers}) i;
CREATE TABLE orders (
    id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, status text NOT NULL,
    total numeric(10, 2) NOT NULL, ordered_at timestamptz NOT NULL);
INSERT INTO orders
    SELECT i, 1 + (i * 7919) % {customers},
           (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + i % 4], (i % 500) + 0.99,
           now() - (i % 2000) * interval '1 hour'
    FROM generate_series(1, {orders}) i;
CREATE INDEX {index} ON orders (customer_id);
-- Deliberately unindexed but for its key: every lookup below is a seq scan.
CREATE TABLE events (
    id bigserial PRIMARY KEY, customer_id int NOT NULL, kind text NOT NULL,
    payload text NOT NULL, at timestamptz NOT NULL);
ANALYZE customers, orders;
"""
CUSTOMER_BY_ID = "SELECT id, email, country FROM customers WHERE id = %s"
CUSTOMER_BY_EMAIL = "SELECT id FROM customers WHERE email = %s"
ORDERS_OF_CUSTOMER = (
    "SELECT id, status, total FROM orders WHERE customer_id = %s ORDER BY ordered_at"
)
EVENTS_OF_CUSTOMER = "SELECT count(*) FROM events WHERE customer_id = %s AND kind = %s"
EVENTS_MATCHING = "SELECT count(*) FROM events WHERE payload LIKE %s"
ORDERS_BY_STATUS = "SELECT status, count(*), sum(total) FROM orders GROUP BY status"
REVENUE_BY_COUNTRY = (
    "SELECT c.country, count(*), sum(o.total) FROM customers c"
    " JOIN orders o ON o.customer_id = c.id WHERE o.ordered_at > now() - %s::interval"
    " GROUP BY c.country ORDER BY 3 DESC"
)
MOVE_CUSTOMER = "UPDATE customers SET country = %s WHERE id = %s"
GROW_EVENTS = """
INSERT INTO events (customer_id, kind, payload, at)
    SELECT 1 + (random() * (%(customers)s - 1))::int,
           (%(kinds)s::text[])[1 + (random() * 4)::int],
           md5(random()::text) || ' ' || (%(words)s::text[])[1 + (random() * 6)::int],
           now()
    FROM generate_series(1, %(rows)s)
"""


def demo_database():
    """The sample database's name, after the app's: two checkouts on one server (different
    DATABASE_URL database names) each reset their own demo, not a shared one."""
    return f"{settings.DATABASES['default']['NAME']}_demo"


def run_demo(*, snapshots=DEFAULT_SNAPSHOTS, scale=1.0, dbname=None, report=print):
    """Set up, play the workload, collect `snapshots` snapshots into `dbname` (default:
    demo_database()); returns the MonitoredDatabase."""
    started = time.monotonic()
    dbname = dbname or demo_database()
    customers, orders, events, growth = (
        max(10, int(rows * scale)) for rows in (CUSTOMERS, ORDERS, EVENTS, EVENTS_GROWTH_PER_ROUND)
    )
    if ensure_database(dbname):
        report(f"created database {dbname} with pg_stat_statements")
    database = register(dbname)
    report(f"monitored database {database.name!r}: {database.masked_dsn} (history cleared)")
    # The index goes once the anomaly baseline has its intervals, early enough that training
    # measures the plan change (over the 8 intervals after it) before its validation part,
    # whose intervals it would not learn from; the call rate jumps near the end.
    jump_round = max(1, snapshots - 2)
    drop_round = min(jump_round, settings.ANOMALY_MIN_POINTS + 1)
    workload = Workload(customers, random.Random(42))
    with psycopg.connect(local_dsn(dbname), autocommit=True) as connection:
        connection.execute(
            SCHEMA.format(index=REGRESSED_INDEX, customers=customers, orders=orders)
        )
        workload.grow_events(connection, events)
        report(enable_hypopg(connection))
        report(
            f"schema: customers {customers:,} rows, orders {orders:,} (indexed by customer), "
            f"events {events:,} (unindexed, grows {growth:,} rows per interval)"
        )
        reset_statements(connection)
        for number in range(snapshots):
            if number == drop_round:
                connection.execute(f"DROP INDEX {REGRESSED_INDEX}")
                report(
                    f"interval {number}: dropped index {REGRESSED_INDEX} (orders-by-customer now "
                    f"scans the table)"
                )
            if number == jump_round:
                report(
                    f"interval {number}: email lookups jump from "
                    f"{Workload.EMAIL_CALLS} to {Workload.EMAIL_CALLS_AFTER_JUMP} per interval"
                )
            workload.play(connection, jumped=number >= jump_round)
            workload.grow_events(connection, growth)
            snapshot = collect(database)
            report(describe(snapshot, number + 1, snapshots))
            plan_collected(database)
    report(advice_for_regressed(database))
    report(train_model())
    report(
        f"done in {time.monotonic() - started:.1f} s: {snapshots} snapshots of {database.name!r}; "
        f"more with: manage.py collect --database {database.name}"
    )
    return database


def train_model():
    """Train on the collected history as `manage.py train_model --save` does, the model
    made current only if it beats the better baseline on the held-out part; the line to
    report. The ML service loads the current model when it starts."""
    lookback_days = max(1, math.ceil(settings.RAW_RETENTION / timedelta(days=1)))
    outcome = training.train(lookback_days)
    if outcome.predictor is None:
        return f"model: none trained, {outcome.reason}"
    version = store.save(outcome.predictor, outcome.metrics, current=outcome.accepted)
    return (
        f"model {version.version}, plan elasticity {outcome.metrics['plan_elasticity']:.2f}: "
        f"{outcome.reason}" + ("" if outcome.accepted else "; not made current")
    )


def plan_collected(database):
    """Plan each collected statement as its query page would (services.plan_of: the cached
    EXPLAIN, fresh once per data version), so its plans are kept (plan_history) before and
    after the index drop: training learns from those what a plan change does to latency."""
    version = data_version(database.id)
    for query in database.queries.select_related("database"):
        services.plan_of(database, query, version)


def enable_hypopg(connection):
    """Create hypopg in the demo database, as its owner, where the server has the package;
    the line to report."""
    available = connection.execute(
        "SELECT FROM pg_available_extensions WHERE name = 'hypopg'"
    ).fetchone()
    if available is None:
        return (
            "hypopg is not installed on the server (Debian: postgresql-15-hypopg): "
            "index suggestions stay unverified"
        )
    connection.execute("CREATE EXTENSION IF NOT EXISTS hypopg")
    return "hypopg: the index advisor checks its suggestions with what-if plans"


def advice_for_regressed(database):
    """The line to report: what the advisor suggests for the query that lost its index."""
    prefix = ORDERS_OF_CUSTOMER.split("%s")[0]
    query = database.queries.select_related("database").get(text__startswith=prefix)
    advice = services.query_suggestions(query)
    if not advice["suggestions"]:
        return f"advisor: no suggestion for the regressed query: {advice['reason']}"
    suggestion = advice["suggestions"][0]
    if not suggestion["verified"]:
        return f"advisor suggests (unverified): {suggestion['statement']}"
    return (
        f"advisor suggests {suggestion['statement']}: estimated cost "
        f"{suggestion['cost_before']:,.0f} -> {suggestion['cost_after']:,.2f} (verified)"
    )


def register(dbname):
    """The `demo` MonitoredDatabase pointing at `dbname`, without earlier history."""
    database, _ = MonitoredDatabase.objects.update_or_create(
        name=DEMO_NAME, defaults={"dsn": local_dsn(dbname), "enabled": True, "last_error": ""}
    )
    database.snapshots.all().delete()
    database.queries.all().delete()
    return database


def describe(snapshot, number, total):
    count = snapshot.statement_count
    line = f"snapshot {number}/{total}: {count} statement{pluralize(count)}"
    top = (
        snapshot.stats.filter(delta_total_exec_time__isnull=False)
        .select_related("query")
        .order_by("-delta_total_exec_time")
        .first()
    )
    if top is None:
        return line + " (the first: interval deltas start with the next one)"
    text = " ".join(top.query.text.split())
    return (
        f"{line}; slowest in the interval: {top.delta_total_exec_time:.0f} ms total, "
        f"{top.delta_calls} call{pluralize(top.delta_calls)}: {text[:70]}"
    )


class Workload:
    """One interval of the shop's traffic, with parameters from a seeded generator."""

    EMAIL_CALLS = 30
    EMAIL_CALLS_AFTER_JUMP = 600

    def __init__(self, customers, rng):
        self.customers = customers
        self.rng = rng

    def customer(self):
        return self.rng.randint(1, self.customers)

    def play(self, connection, *, jumped):
        email_calls = self.EMAIL_CALLS_AFTER_JUMP if jumped else self.EMAIL_CALLS
        customer = self.customer
        traffic = [
            (CUSTOMER_BY_ID, 300, lambda: [customer()]),
            (CUSTOMER_BY_EMAIL, email_calls, lambda: [f"customer{customer()}@example.com"]),
            (ORDERS_OF_CUSTOMER, 60, lambda: [customer()]),
            (EVENTS_OF_CUSTOMER, 10, lambda: [customer(), self.rng.choice(EVENT_KINDS)]),
            (EVENTS_MATCHING, 3, lambda: [f"%{self.rng.choice(WORDS)}%"]),
            (ORDERS_BY_STATUS, 5, list),
            (REVENUE_BY_COUNTRY, 3, lambda: [f"{self.rng.randint(1, 60)} days"]),
            (MOVE_CUSTOMER, 50, lambda: [self.rng.choice(COUNTRIES), customer()]),
        ]
        with connection.pipeline():
            for statement, calls, parameters in traffic:
                for _ in range(calls):
                    connection.execute(statement, parameters())

    def grow_events(self, connection, rows):
        connection.execute(
            GROW_EVENTS,
            {
                "customers": self.customers,
                "rows": rows,
                "kinds": list(EVENT_KINDS),
                "words": list(WORDS),
            },
        )
