"""Model versions in the database: a predictor is pickled with the sha256 of its bytes, and
loaded only when the bytes read back are the ones stored. One version is current at a time.

The pickles are the service's own, written by its runner into the app's database: whoever can
write there can run code in the service, as with any pickle. The checksum guards against a
truncated or altered row, not against that.
"""

import hashlib
import math
import pickle

from django.db import connection, transaction
from django.utils import timezone

from mlservice.models import ModelVersion

MAKE_CURRENT_LOCK = 0x6D6C2D6375727200  # advisory lock key: "ml-curr"


class CorruptModel(Exception):
    """A stored version whose bytes do not match its checksum, or do not unpickle."""


def save(predictor, metrics, *, current):
    """Store `predictor` as a new version, made current (in the same transaction) if asked."""
    pickled = pickle.dumps(predictor, protocol=pickle.HIGHEST_PROTOCOL)
    checksum = hashlib.sha256(pickled).hexdigest()
    now = timezone.now()
    with transaction.atomic():
        if current:
            with connection.cursor() as cursor:  # two makers at once would both insert a current
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [MAKE_CURRENT_LOCK])
            ModelVersion.objects.filter(current=True).update(current=False)
        return ModelVersion.objects.create(
            version=f"{now:%Y%m%dT%H%M%SZ}-{checksum[:8]}",
            created_at=now,
            feature_names=list(predictor.feature_names),
            metrics=plain(metrics),
            checksum=checksum,
            pickled=pickled,
            current=current,
        )


def current_id():
    """The id of the current version, or None: the query each worker repeats every few
    seconds (the partial unique index on `current` answers it)."""
    return ModelVersion.objects.filter(current=True).values_list("id", flat=True).first()


def load(version_id):
    """(ModelVersion without its bytes, the predictor); CorruptModel if the bytes are not the
    ones stored or do not unpickle."""
    row = ModelVersion.objects.get(pk=version_id)
    pickled = bytes(row.pickled)
    if hashlib.sha256(pickled).hexdigest() != row.checksum:
        raise CorruptModel(f"model version {row.version}: its bytes do not match its checksum")
    try:
        predictor = pickle.loads(pickled)
    except Exception as error:  # a class that moved, a truncated pickle: the row is unusable
        raise CorruptModel(f"model version {row.version} does not load: {error!r}") from error
    row.pickled = None
    return row, predictor


def plain(value):
    """`value` as plain JSON: numpy scalars as Python numbers, NaN and infinities as None
    (PostgreSQL's jsonb and strict JSON parsers refuse them)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
