"""Fingerprints: equivalent statements share one, different ones differ, bad SQL still gets one."""

from django.core.cache import caches

from pganalytics.fingerprint import compute_fingerprint, fingerprint


def test_equivalent_statements_share_a_fingerprint():
    forms = [
        "SELECT id, name FROM users WHERE id = 42",
        "select id, name\n  from users where id = $1",
        "SELECT id, name FROM users WHERE id = 7 /* from the API */",
    ]
    assert len({compute_fingerprint(sql).fingerprint for sql in forms}) == 1


def test_different_statements_differ():
    forms = [
        "SELECT id FROM users WHERE id = 1",
        "SELECT id FROM users WHERE email = 'a'",
        "SELECT id FROM accounts WHERE id = 1",
        "DELETE FROM users WHERE id = 1",
    ]
    assert len({compute_fingerprint(sql).fingerprint for sql in forms}) == len(forms)


def test_normalized_text_replaces_constants():
    result = compute_fingerprint("SELECT * FROM t WHERE a = 5 AND b = 'x'")
    assert result.parsed and result.normalized == "SELECT * FROM t WHERE a = $1 AND b = $2"


def test_text_that_does_not_parse_gets_a_stable_flagged_fallback():
    first = compute_fingerprint("SELEC oops FROM")
    again = compute_fingerprint("SELEC   oops\nFROM")
    assert not first.parsed and "syntax error" in first.error
    assert first.fingerprint == again.fingerprint and first.fingerprint.startswith("x")
    assert len(first.fingerprint) == 16
    assert first.fingerprint != compute_fingerprint("SELEC other FROM").fingerprint


def test_fingerprint_goes_through_its_cache():
    cache = caches["fingerprints"]
    cache.clear()
    before = cache.metrics()
    assert fingerprint("SELECT 1") == fingerprint("SELECT 1")
    after = cache.metrics()
    assert after["hits"] - before["hits"] >= 1
    assert after["entries"] == 1
