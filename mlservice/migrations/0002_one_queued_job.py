"""At most one queued training job: the ones queued beside the oldest are failed first."""

from django.db import migrations, models

FAIL_ALL_BUT_THE_OLDEST = """
UPDATE mlservice_trainingjob SET status = 'failed', finished_at = now(),
       error = 'queued beside another job, which trains on the same history'
WHERE status = 'queued' AND id <> (
    SELECT id FROM mlservice_trainingjob WHERE status = 'queued' ORDER BY created_at LIMIT 1)
"""


class Migration(migrations.Migration):

    dependencies = [
        ("mlservice", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(FAIL_ALL_BUT_THE_OLDEST, migrations.RunSQL.noop),
        migrations.AddConstraint(
            model_name="trainingjob",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "queued")), fields=("status",),
                name="one_queued_job",
            ),
        ),
    ]
