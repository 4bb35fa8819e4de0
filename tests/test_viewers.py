"""Viewers who are not staff: the app's own login and logout pages, the permission to read
the analytics (group "Analytics viewers", superusers have it), the admin still staff-only."""

import json

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

GROUP = "Analytics viewers"
BEFORE = ("pganalytics", "0004_query_userid_and_superuser_flag")


@pytest.fixture
def pages(unreachable):
    database = f"/databases/{unreachable.id}/"
    return ["/", database, database + "queries/", "/anomalies/"]


def viewers_group_permissions():
    group = Group.objects.filter(name=GROUP).first()
    return group and [(p.content_type.app_label, p.codename) for p in group.permissions.all()]


def test_the_migration_makes_the_group_with_the_permission_and_is_reversible(db):
    assert viewers_group_permissions() == [("pganalytics", "view_analytics")]
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    assert viewers_group_permissions() is None
    assert not Permission.objects.filter(codename="view_analytics").exists()
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("pganalytics"))
    assert viewers_group_permissions() == [("pganalytics", "view_analytics")]


def test_a_viewer_logs_in_on_the_app_s_own_page_reads_and_logs_out(client, make_viewer, pages):
    make_viewer("reader")
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"] == f"/login/?next={url}"
    login = client.get("/login/?next=/anomalies/").content.decode()
    assert '<form method="post" action="/login/"' in login and "pganalytics/style.css" in login
    assert 'name="next" value="/anomalies/"' in login and "Log out" not in login

    failed = client.post("/login/", {"username": "reader", "password": "wrong"})
    assert failed.status_code == 200 and "Wrong user name or password" in failed.content.decode()
    credentials = {"username": "reader", "password": "pw", "next": "/anomalies/"}
    response = client.post("/login/", credentials)
    assert response.status_code == 302 and response["Location"] == "/anomalies/"
    for url in pages:
        page = client.get(url)
        assert page.status_code == 200, url
        text = page.content.decode()
        assert '<form class="logout" method="post" action="/logout/">' in text
        assert 'name="csrfmiddlewaretoken"' in text and "reader" in text
    assert client.get("/api/v1/databases/").status_code == 200

    assert client.get("/logout/").status_code == 405  # a link cannot log anyone out
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302
    assert client.get("/api/v1/databases/").status_code == 401


def test_without_the_permission_pages_are_403_and_the_api_says_so(client, pages):
    client.force_login(User.objects.create_user("outsider", password="pw"))
    for url in pages:
        page = client.get(url)
        assert page.status_code == 403, url
        text = page.content.decode()
        assert "<h1>Not allowed</h1>" in text and GROUP in text and "pganalytics/style.css" in text
    response = client.get("/api/v1/databases/")
    assert response.status_code == 403 and response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {
        "error": "permission required: pganalytics.view_analytics"
    }
    client.logout()
    response = client.get("/api/v1/databases/")
    assert response.status_code == 401
    assert json.loads(response.content) == {"error": "authentication required"}


def test_the_permission_alone_or_superuser_status_is_enough(client, pages):
    direct = User.objects.create_user("direct", password="pw")
    direct.user_permissions.add(Permission.objects.get(codename="view_analytics"))
    root = User.objects.create_superuser("root", password="pw")
    for user in [direct, root]:
        client.force_login(user)
        assert [client.get(url).status_code for url in pages] == [200] * len(pages)
        assert client.get("/api/v1/anomalies/").status_code == 200


def test_the_admin_stays_staff_only(client, make_viewer):
    client.force_login(make_viewer("reader"))
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
