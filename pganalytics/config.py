"""Typed reading of the environment: every bad value stops start-up with one line naming it."""

import ipaddress
import re
import sys
from contextlib import contextmanager
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

# ASCII only: `\d` and float() also take other scripts' digits, such as '٣' (Arabic-Indic 3).
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)?\s*", re.ASCII)
_SECONDS_PER_UNIT = {
    "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ImproperlyConfigured):
    """A configuration variable holds a value that cannot be used; the message names both."""


def parse_duration(text):
    """Seconds (float) from `900`, `900s`, `15m`, `1h`, `7d`, `2w` or `100ms`; ValueError
    otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return float(match[1]) * _SECONDS_PER_UNIT[match[2]]


def parse_period(text):
    """Seconds > 0 from a duration text (an interval or a window); ValueError saying why not."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError("expected a duration such as 90s, 15m, 1h, 7d or 2w") from None
    if seconds <= 0:
        raise ValueError("must be longer than 0")
    return seconds


class Config:
    """Reads variables from a mapping (os.environ by default); django-environ parses the
    database URL. Values are taken as written: django-environ would read `$NAME` as a
    reference to another variable, which silently swaps a secret starting with `$`."""

    def __init__(self, environ_mapping=None):
        self.env = environ.Env()
        if environ_mapping is not None:
            self.env.ENVIRON = environ_mapping

    def _raw(self, name, default):
        return self.env.ENVIRON.get(name, default)

    def text(self, name, default):
        """The value as written (secrets, tokens)."""
        return self._raw(name, default)

    def words(self, name, default):
        """Comma-separated values, blanks dropped (`ALLOWED_HOSTS`)."""
        raw = self._raw(name, default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def _fail(self, name, raw, expected):
        raise ConfigError(f"{name}={raw!r} is invalid: expected {expected}")

    def duration(self, name, default):
        raw = self._raw(name, default)
        try:
            return parse_duration(raw)
        except ValueError:
            self._fail(name, raw, "a duration such as 900, 900s, 15m, 1h or 100ms")

    def period(self, name, default):
        """A duration longer than 0 (timeouts, lifetimes)."""
        raw = self._raw(name, default)
        try:
            return parse_period(raw)
        except ValueError:
            self._fail(name, raw, "a duration longer than 0, such as 900, 900s, 15m, 1h or 100ms")

    def cache_timeout(self, name, default):
        """A cache TTL in whole seconds >= 1: Django truncates TIMEOUT to an int, so `100ms`
        would become 0 (every entry expired at once) and `1500ms` 1."""
        seconds = self.duration(name, default)
        if seconds < 1 or seconds != int(seconds):
            self._fail(name, self._raw(name, default), "whole seconds, at least 1s (e.g. 90s, 15m)")
        return int(seconds)

    def integer(self, name, default, minimum=0):
        return self._at_least(name, default, int, minimum, f"a whole number >= {minimum}")

    def number(self, name, default, minimum=0.0):
        return self._at_least(name, default, float, minimum, f"a number >= {minimum}")

    def _at_least(self, name, default, cast, minimum, expected):
        raw = self._raw(name, str(default))
        try:
            value = cast(raw)
        except ValueError:
            value = None
        if value is None or not value >= minimum:  # `not >=` also refuses NaN
            self._fail(name, raw, expected)
        return value

    def boolean(self, name, default):
        raw = self._raw(name, "true" if default else "false")
        folded = raw.strip().lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
        self._fail(name, raw, "true or false")

    def url(self, name, default, schemes):
        """A URL with one of `schemes` and a host; the empty string when allowed by default=''."""
        raw = self._raw(name, default)
        if raw == "" and default == "":
            return ""
        expected = f"a URL such as {schemes[0]}://host:port"
        parts = self._url_parts(name, raw, expected)
        has_address = parts.path if parts.scheme == "unix" else parts.hostname
        if parts.scheme not in schemes or not has_address:
            self._fail(name, masked(raw), expected)
        return raw.rstrip("/")

    def networks(self, name, default):
        """Comma-separated addresses or networks (`127.0.0.1`, `10.0.0.0/8`, `::1`); may be empty."""
        raw = self._raw(name, default)
        try:
            return tuple(
                ipaddress.ip_network(item.strip(), strict=False)
                for item in raw.split(",") if item.strip()
            )
        except ValueError:
            self._fail(name, raw, "IP addresses or networks separated by commas")

    def database(self, name, default):
        """Django's DATABASES entry for a postgres:// URL (password never echoed back)."""
        raw = self._raw(name, default)
        expected = "a URL such as postgres://user@host:5432/dbname"
        parts = self._url_parts(name, raw, expected)
        if parts.scheme not in ("postgres", "postgresql", "pgsql") or not parts.path.strip("/"):
            self._fail(name, masked(raw), expected)
        return self.env.db_url_config(raw)

    def _url_parts(self, name, raw, expected):
        """urlsplit(raw), or a ConfigError for a malformed URL (a bad port, a broken IPv6 host)."""
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
        except ValueError:
            self._fail(name, masked(raw), expected)
        return parts


def masked(url):
    """`url` with the password of its user part replaced by ***, for error messages. The
    password runs to the last `@`, as urllib (so django-environ) reads these URLs; a monitored
    database's DSN, which libpq reads, is masked by pganalytics.dsn instead."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not separator or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


@contextmanager
def exit_on_config_error():
    """Entry points wrap start-up in this: a ConfigError exits with its one-line message."""
    try:
        yield
    except ConfigError as error:
        sys.exit(f"pganalytics: configuration error: {error}")
