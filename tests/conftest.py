"""Shared fixtures: the suite runs against the real PostgreSQL brought up by scripts/setup."""

import os

import pytest


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """PYTEST_DB_SUFFIX lets several suite runs share one server without sharing a database."""
    from django.conf import settings

    suffix = os.environ.get("PYTEST_DB_SUFFIX")
    if suffix:
        test = settings.DATABASES["default"].setdefault("TEST", {})
        base = test.get("NAME") or f"test_{settings.DATABASES['default']['NAME']}"
        test["NAME"] = f"{base}_{suffix}"
