"""A load of concurrent clients on the app, measured from outside (loadtest, bench_db).

For loadtest, keys are a monitored database's real URLs: its top queries in every window and
order the pages offer, and every statement's query page. A share `hot` of the requests goes
to a fifth of the keys (80/20 by default), as on a dashboard everyone opens. One login for
all the clients: they share its session cookie. Each client is a thread with its own HTTP
session sending its requests one after another; the figures come from every response:
latency, status (anything but 200, or no answer, is an error) and the `X-Cache` header.
"""

import random
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from django.contrib.auth.models import Group, Permission, User
from django.core.management.base import CommandError
from django.db.models import Count

from pganalytics.analytics import services
from pganalytics.models import MonitoredDatabase

HOT_KEYS = 0.2  # the share of the keys that gets `hot` of the requests
USERNAME = "loadtest"
TIMEOUT = (5.0, 60.0)  # connect, read: an answer slower than this counts as an error


def busiest_database(name=None):
    """The monitored database named `name`, or the one with the most snapshots; None when
    there is none with snapshots."""
    databases = MonitoredDatabase.objects.annotate(snapshot_count=Count("snapshots"))
    if name is not None:
        databases = databases.filter(name=name)
    return databases.filter(snapshot_count__gt=0).order_by("-snapshot_count", "name").first()


def keys_of(database):
    """The API URLs (paths) of `database`'s top queries and of each statement's page."""
    base = f"/api/v1/databases/{database.id}/queries/"
    tops = [
        f"{base}?window={window}&order={order}"
        for window in services.WINDOW_CHOICES
        for order in services.ORDERINGS
    ]
    fingerprints = database.queries.order_by("fingerprint").values_list("fingerprint", flat=True)
    return tops + [f"{base}{fingerprint}/" for fingerprint in fingerprints]


def load_viewer():
    """The load's user, a viewer, with a new random password; returns (username, password)."""
    password = secrets.token_urlsafe(24)
    group, _ = Group.objects.get_or_create(name="Analytics viewers")
    group.permissions.add(Permission.objects.get(codename="view_analytics"))
    user, _ = User.objects.get_or_create(username=USERNAME)
    user.set_password(password)
    user.save()
    user.groups.add(group)
    return USERNAME, password


def login(url, username, password):
    """The session cookies of one login on the server at `url`, through its login form."""
    with requests.Session() as session:
        form = session.get(f"{url}/login/", timeout=TIMEOUT)
        response = session.post(
            f"{url}/login/", timeout=TIMEOUT, allow_redirects=False,
            data={
                "username": username, "password": password,
                "csrfmiddlewaretoken": form.cookies.get("csrftoken", ""),
            },
            headers={"Referer": f"{url}/login/"},
        )
        if response.status_code != 302 or "sessionid" not in session.cookies:
            raise CommandError(
                f"could not log in at {url}/login/ as {username!r} ({response.status_code}): "
                "is the server using this command's DATABASE_URL?"
            )
        return session.cookies.get_dict()


@dataclass
class Figures:
    """What one run measured."""

    seconds: float = 0.0
    latencies: list = field(default_factory=list)
    errors: int = 0
    hits: int = 0
    misses: int = 0
    error_samples: list = field(default_factory=list)

    def add(self, other):
        """Adds another run's figures (bench_db's rounds of one mode)."""
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors += other.errors
        self.hits += other.hits
        self.misses += other.misses
        self.error_samples = (self.error_samples + other.error_samples)[:5]

    @property
    def requests_per_s(self):
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, share):
        """Milliseconds under which `share` of the responses came; None if none came."""
        ordered = sorted(self.latencies)
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000

    def summary(self):
        answered = self.hits + self.misses
        return {
            "requests": len(self.latencies),
            "seconds": self.seconds,
            "requests_per_s": self.requests_per_s,
            "p50_ms": statistics.median(self.latencies) * 1000,
            "p95_ms": self.percentile_ms(0.95),
            "p99_ms": self.percentile_ms(0.99),
            "errors": self.errors,
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hits / answered if answered else None,
            "error_samples": self.error_samples,
        }


class Load:
    """`concurrency` clients sending `requests` requests in all (as evenly as can be) to
    `url` + one of `keys`."""

    def __init__(self, url, keys, cookies, *, concurrency, requests, hot, seed=0):
        self.url, self.keys, self.cookies = url, list(keys), cookies
        self.concurrency, self.requests, self.hot = concurrency, requests, hot
        shuffled = random.Random(seed).sample(self.keys, len(self.keys))
        split = max(1, round(len(shuffled) * HOT_KEYS))
        self.hot_keys, self.cold_keys = shuffled[:split], shuffled[split:] or shuffled[:split]
        self.seed = seed
        self.lock = threading.Lock()

    def run(self, progress):
        """The run's Figures; `progress` (tqdm) is updated per response."""
        figures = Figures()
        started = time.perf_counter()
        with ThreadPoolExecutor(self.concurrency) as pool:
            clients = [
                pool.submit(self.client, number, figures, progress)
                for number in range(self.concurrency)
            ]
            for client in clients:
                client.result()
        figures.seconds = time.perf_counter() - started
        return figures

    def client(self, number, figures, progress):
        choose = random.Random(f"{self.seed}-{number}")
        with requests.Session() as session:
            session.cookies.update(self.cookies)
            share = self.requests // self.concurrency + (number < self.requests % self.concurrency)
            for _ in range(share):
                keys = self.hot_keys if choose.random() < self.hot else self.cold_keys
                self.one(session, self.url + choose.choice(keys), figures)
                progress.update()

    def one(self, session, url, figures):
        before = time.perf_counter()
        try:
            response = session.get(url, timeout=TIMEOUT, allow_redirects=False)
            error = None if response.status_code == 200 else f"{response.status_code} {url}"
            state = response.headers.get("X-Cache")
        except requests.RequestException as failure:
            error, state = f"{type(failure).__name__} {url}", None
        taken = time.perf_counter() - before
        with self.lock:
            figures.latencies.append(taken)
            if error is not None:
                figures.errors += 1
                if len(figures.error_samples) < 5:
                    figures.error_samples.append(error)
            elif state == "hit":
                figures.hits += 1
            elif state == "miss":
                figures.misses += 1
