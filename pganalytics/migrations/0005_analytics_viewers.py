"""The permission to read the analytics and the group "Analytics viewers" holding it.

Django creates a model's permissions only after `migrate` has run (post_migrate), so the
permission (and its content type, on a fresh database) is made here to give it to the group.
"""

from django.db import migrations

GROUP = "Analytics viewers"
CODENAME = "view_analytics"
NAME = "Can read the analytics pages and API"


def permission(apps):
    content_type, _ = apps.get_model("contenttypes", "ContentType").objects.get_or_create(
        app_label="pganalytics", model="monitoreddatabase"
    )
    found, _ = apps.get_model("auth", "Permission").objects.get_or_create(
        content_type=content_type, codename=CODENAME, defaults={"name": NAME}
    )
    return found


def create_viewers(apps, schema_editor):
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name=GROUP)
    group.permissions.add(permission(apps))


def delete_viewers(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()
    apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label="pganalytics", codename=CODENAME
    ).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("pganalytics", "0004_query_userid_and_superuser_flag"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="monitoreddatabase",
            options={"ordering": ["name"], "permissions": [(CODENAME, NAME)]},
        ),
        migrations.RunPython(create_viewers, delete_viewers),
    ]
