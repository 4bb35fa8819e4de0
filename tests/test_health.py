def test_healthz_answers_with_the_database_state(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_admin_login_page_is_served(client, db):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b"Django administration" in response.content
