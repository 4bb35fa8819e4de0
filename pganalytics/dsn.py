"""Connection strings of monitored databases hold passwords: these show them masked.

A DSN is a libpq URL (postgresql://user:secret@host/db?password=...) or a key=value string
(host=h password='se cret'). Both forms are masked by pattern, and any password libpq would
read from the string is also replaced wherever it appears in a text (an error message may
quote it), so neither form leaks the secret into the admin, a log line or `last_error`.
"""

import re

from psycopg import conninfo

MASK = "***"
_URL_USERINFO_PASSWORD = re.compile(r"(://[^:@/?#]*:)([^@/?#]*)(@)")
_URL_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:\\.|[^'\\])*'|\S*)", re.IGNORECASE)


def passwords(dsn):
    """The password libpq would use from `dsn`, and its raw spelling in the URL, if any."""
    found = set()
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except Exception:  # an unparsable DSN: the patterns below still mask what they match
        password = None
    if password:
        found.add(password)
    for pattern in (_URL_USERINFO_PASSWORD, _URL_QUERY_PASSWORD, _KEYWORD_PASSWORD):
        for match in pattern.finditer(dsn):
            if match[2]:
                found.add(match[2])
    return found


def scrub(text, dsn):
    """`text` with every password of `dsn` replaced by the mask."""
    for password in sorted(passwords(dsn), key=len, reverse=True):
        text = text.replace(password, MASK)
    return text


def mask_dsn(dsn):
    """`dsn` as it may be shown: the same string with the password masked."""
    masked = _URL_USERINFO_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", dsn)
    masked = _URL_QUERY_PASSWORD.sub(rf"\g<1>{MASK}", masked)
    if "://" not in masked:
        masked = _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", masked)
    return scrub(masked, dsn)
