"""Query fingerprints with pglast (pg_query's algorithm, as pganalyze uses), cached.

Equivalent statements (other constants, whitespace, case) share a fingerprint. Text that
does not parse still gets a stable one, derived from its whitespace-folded text and
flagged, so it can be shown and grouped rather than turned into an error.
"""

import hashlib
import re
from dataclasses import dataclass

from django.core.cache import caches
from pglast import parser

FALLBACK_PREFIX = "x"
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Fingerprint:
    fingerprint: str
    normalized: str
    parsed: bool
    error: str = ""


def fold_whitespace(text):
    """`text` on one line: each run of whitespace as one space, none at either end."""
    return _WHITESPACE.sub(" ", text).strip()


def compute_fingerprint(sql):
    """The Fingerprint of `sql`; never raises for bad SQL."""
    try:
        return Fingerprint(parser.fingerprint(sql), parser.normalize(sql), parsed=True)
    except parser.ParseError as error:
        folded = fold_whitespace(sql)
        digest = hashlib.blake2b(folded.encode(), digest_size=8).hexdigest()[1:]
        return Fingerprint(FALLBACK_PREFIX + digest, folded, parsed=False, error=str(error))


def fingerprint(sql):
    """compute_fingerprint through the `fingerprints` cache (key: a hash of the text)."""
    key = "fingerprint:" + hashlib.blake2b(sql.encode(), digest_size=16).hexdigest()
    return caches["fingerprints"].get_or_set(key, lambda: compute_fingerprint(sql))
