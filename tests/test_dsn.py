"""DSN masking and scrubbing: libpq's reading of a DSN, and where its secrets could leak."""

import psycopg
import pytest

from pganalytics.dsn import UNPARSABLE, mask_dsn, scrub

URL = "postgresql://monitor"


@pytest.mark.parametrize(
    "dsn, masked",
    [
        (r"host=db.example password=sec\ ret dbname=a", "password=*** dbname=a host=db.example"),
        ("host=db.example sslpassword=k-pw sslkey=/k", "host=db.example sslkey=/k sslpassword=***"),
        (f"{URL}:pa@ss-word@db.example/app", f"{URL}:***@db.example/app"),
        (f"{URL}:pa/ss-word@db.example/app", f"{URL}:***@db.example/app"),
        (f"{URL}:p%40ss-word@db.example/app", f"{URL}:***@db.example/app"),
        (f"{URL}@db.example/app?sslpassword=k-pw", f"{URL}@db.example/app?sslpassword=***"),
        ("postgresql://db.example:5432/app?application_name=me", None),  # nothing secret
        (
            f"{URL}:s3cret@db.example/app?application_name=me@laptop",
            f"{URL}:***@db.example/app?application_name=me@laptop",
        ),
        (f"{URL}:a?b%40c@db.example/app", f"{URL}:***@db.example/app"),
        (
            f"{URL}@db.example/app?password=Xy7#kq9Lm2&sslmode=require",
            f"{URL}@db.example/app?password=***&sslmode=require",
        ),
        (r"host=db.example password=sec\ ret junk", UNPARSABLE),
    ],
)
def test_every_secret_is_masked_whole(dsn, masked):
    assert mask_dsn(dsn) == (masked or dsn)


def test_the_rest_of_a_url_password_after_an_at_sign_is_scrubbed_from_connection_errors():
    """libpq reads `ss-word@127.0.0.1` as the host and names it when it cannot resolve it."""
    dsn = f"{URL}:pa@ss-word@127.0.0.1:1/app"
    with pytest.raises(psycopg.OperationalError) as failed:
        psycopg.connect(dsn, connect_timeout=2)
    assert "ss-word" in str(failed.value)
    assert "ss-word" not in scrub(str(failed.value), dsn)


@pytest.mark.parametrize(
    "dsn",
    [r"host=h password=sec\ ret", "host=h sslpassword='sec ret'", r"host=h password=sec\ ret x"],
)
def test_scrub_removes_the_password_wherever_it_appears(dsn):
    assert scrub("tried 'sec ret' twice: sec ret", dsn) == "tried '***' twice: ***"
