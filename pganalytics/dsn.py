"""Connection strings of monitored databases hold passwords: these show them masked.

A DSN is a libpq URL (postgresql://user:secret@host/db?password=...) or a key=value string
(host=h password='se cret'); `password` and `sslpassword` are its secrets. A key=value
string is shown as libpq reads it, rebuilt with the secrets masked. A URL keeps its form
(it is what the user typed): its userinfo password is masked up to the `@` that starts the
host part (libpq would end it at the first `@` or `/`, reading the rest of `u:pa@ss@h` as
the host `ss@h`), and so are its secret query parameters, to the next `&`. Where a URL is
ambiguous, more is masked, never less. Text libpq cannot parse is not shown.
Every spelling of a secret is also replaced wherever it appears in a text (an error
message may quote it), so no form leaks it into the admin, a log line or `last_error`.
"""

import re
from urllib.parse import unquote

from psycopg import ProgrammingError, conninfo

MASK = "***"
UNPARSABLE = "<unparsable DSN>"
SECRET_KEYWORDS = ("password", "sslpassword")
_URL = re.compile(r"postgres(?:ql)?://")  # libpq's URL prefixes (case-sensitive)
# The userinfo password runs to the `@` after which the host part holds no `@` (an `@` may
# follow in the query, `?application_name=me@laptop`). libpq stops at the first `@` or `/`;
# this reading masks a password holding either whole. It may hold `?` too, so a URL without
# userinfo but with an `@` in its query (`h:5432/db?application_name=me@laptop`) is read as
# having a password: masked too much, never too little.
_URL_USERINFO_PASSWORD = re.compile(
    r"\A(postgres(?:ql)?://[^:@/?#]*:)(.*?)(@[^@?]*(?:\?.*)?)\Z", re.DOTALL
)
_URL_QUERY_SECRET = re.compile(r"([?&](?:ssl)?password=)([^&]*)")  # libpq ends values at &
# A key=value secret: quoted (to the closing quote, or the end) or up to a space; libpq
# reads `\x` as `x` in both.
_KEYWORD_SECRET = re.compile(r"\b(?:ssl)?password\s*=\s*(?:'((?:\\.|[^'\\])*)|((?:\\.|[^\s\\])*))")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def passwords(dsn):
    """Every spelling of a secret of `dsn` a text may quote, longest first.

    libpq's values; the raw, unescaped and percent-decoded text of each, found by pattern
    (so also in an unparsable DSN); and the pieces of a URL password that libpq would read
    as the host, port or database name.
    """
    found = set()
    try:
        params = conninfo.conninfo_to_dict(dsn)
        found.update(params.get(keyword) for keyword in SECRET_KEYWORDS)
    except ProgrammingError:  # unparsable: the patterns below still find the secrets
        pass
    if _URL.match(dsn):
        found.update(match[2] for match in _URL_QUERY_SECRET.finditer(dsn))
        if userinfo := _URL_USERINFO_PASSWORD.match(dsn):
            found.update([userinfo[2], *re.split("[@/]", userinfo[2])])
    else:
        raw = [value for match in _KEYWORD_SECRET.finditer(dsn) for value in match.groups()]
        found.update([*raw, *(_ESCAPE.sub(r"\1", value) for value in filter(None, raw))])
    found |= {unquote(secret) for secret in found if secret}
    return sorted(filter(None, found), key=len, reverse=True)


def scrub(text, dsn):
    """`text` with every password of `dsn` replaced by the mask."""
    for password in passwords(dsn):
        text = text.replace(password, MASK)
    return text


def mask_dsn(dsn):
    """`dsn` as it may be shown: its secrets masked, or UNPARSABLE when libpq cannot read it."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except ProgrammingError:
        return UNPARSABLE
    if _URL.match(dsn):
        masked = _URL_USERINFO_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", dsn)
        masked = _URL_QUERY_SECRET.sub(rf"\g<1>{MASK}", masked)
    else:
        secrets = {keyword: MASK for keyword in SECRET_KEYWORDS if keyword in params}
        masked = conninfo.make_conninfo(**{**params, **secrets})
    return scrub(masked, dsn)
