"""The v1 contract's requests: parsed and checked here, so that every malformed request is a
400 naming its field (mlservice.openapi describes the same rules; keep the two together).

Fields are named by their path in the body: `features.mean_ms`, `items[3].scenario`; `body`
is the body itself, `Content-Type` and `Content-Length` the headers.
"""

import json

from django.core.exceptions import RequestDataTooBig

from pganalytics.analytics.features import FEATURE_NAMES, SCENARIOS

MAX_BATCH_ITEMS = 500
MAX_FINGERPRINT_LENGTH = 128
# Features are counts, ratios, milliseconds and plan costs: bounded so that no prediction
# (mean + 1.28 stddev, or a model's) overflows to a number JSON cannot carry.
MAX_FEATURE_VALUE = 1e12
MAX_LOOKBACK_DAYS = 3650
FEATURE_SET = frozenset(FEATURE_NAMES)


class BadInput(Exception):
    """A 400: `field` says where, the message what is wrong."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field

    def as_json(self):
        return {"error": f"{self.field}: {self}", "field": self.field}


def json_body(request):
    """The request's JSON value. The size is checked from Content-Length before the body is
    read (Django's DATA_UPLOAD_MAX_MEMORY_SIZE); NaN and Infinity are not JSON."""
    if request.content_type != "application/json":
        raise BadInput("Content-Type", "expected application/json")
    if not request.META.get("CONTENT_LENGTH"):  # chunked: Django would read it as empty
        raise BadInput("Content-Length", "required: a body is read up to its stated length")
    try:
        raw = request.body
    except RequestDataTooBig:
        raise BadInput("body", "over 1 MB") from None
    try:
        body = json.loads(raw, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise BadInput("body", f"not JSON ({error})") from None
    return body


def refuse_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def expect_object(value, field, required=(), optional=()):
    """`value` as a dict with all of `required`, perhaps some of `optional`, nothing else."""
    if not isinstance(value, dict):
        raise BadInput(field, "expected an object")
    for name in required:
        if name not in value:
            raise BadInput(child(field, name), "missing")
    for name in value:
        if name not in required and name not in optional:
            raise BadInput(child(field, name), "unknown field")
    return value


def child(field, name):
    """The path of `name` inside `field`: the body's own fields go by their bare names."""
    return name if field == "body" else f"{field}.{name}"


def predict_request(value, field="body"):
    """(fingerprint, scenario, features) of one predict request."""
    request = expect_object(value, field, ("fingerprint", "features"), ("scenario",))
    fingerprint = request["fingerprint"]
    if not isinstance(fingerprint, str) or not 1 <= len(fingerprint) <= MAX_FINGERPRINT_LENGTH:
        expected = f"expected a string of 1 to {MAX_FINGERPRINT_LENGTH} characters"
        raise BadInput(child(field, "fingerprint"), expected)
    scenario = request.get("scenario", "current")
    if scenario not in SCENARIOS:
        raise BadInput(child(field, "scenario"), f"expected one of {', '.join(SCENARIOS)}")
    features = request["features"]
    if not valid_features(features):  # then find which name is wrong, to say so
        field = child(field, "features")
        expect_object(features, field, FEATURE_NAMES)
        name = next(
            name for name, value in features.items()
            if not is_number(value, float, 0, MAX_FEATURE_VALUE)
        )
        raise BadInput(f"{field}.{name}", f"expected a number from 0 to {MAX_FEATURE_VALUE:g}")
    return fingerprint, scenario, features


def valid_features(features):
    """A number from 0 to MAX_FEATURE_VALUE for every name of FEATURE_NAMES, nothing else:
    checked as a whole, in a few passes over C-level builtins (a batch holds 500 of them).
    JSON's numbers are int or float exactly (its true is a bool); NaN is refused when parsed."""
    if not isinstance(features, dict) or features.keys() != FEATURE_SET:
        return False
    values = features.values()
    return (
        all(type(value) in (int, float) for value in values)
        and 0 <= min(values)
        and max(values) <= MAX_FEATURE_VALUE
    )


def is_number(value, kind, low, high):
    """An int (or, for kind float, a float too) from low to high, so finite; never a bool
    (JSON's true is not 1). The bounds are compared first: 10**400 does not fit a float."""
    kinds = (int, float) if kind is float else (int,)
    return isinstance(value, kinds) and not isinstance(value, bool) and low <= value <= high


def batch_items(body):
    """The items of a batch, refused as a whole above MAX_BATCH_ITEMS before any is read."""
    expect_object(body, "body", ("items",))
    items = body["items"]
    if not isinstance(items, list):
        raise BadInput("items", "expected an array")
    if len(items) > MAX_BATCH_ITEMS:
        raise BadInput("items", f"{len(items)} items: at most {MAX_BATCH_ITEMS} in one batch")
    return items


def lookback_days(body):
    expect_object(body, "body", ("lookback_days",))
    days = body["lookback_days"]
    if not is_number(days, int, 1, MAX_LOOKBACK_DAYS):
        raise BadInput("lookback_days", f"expected a whole number 1 to {MAX_LOOKBACK_DAYS}")
    return days
