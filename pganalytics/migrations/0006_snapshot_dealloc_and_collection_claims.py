"""Evictions read with each snapshot, and the claims `collect --every` processes share."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("pganalytics", "0005_analytics_viewers"),
    ]

    operations = [
        migrations.AddField(
            model_name="snapshot",
            name="dealloc",
            field=models.BigIntegerField(
                blank=True,
                null=True,
                help_text="pg_stat_statements_info.dealloc: times the server evicted entries (the "
                "least-used 5 % each time) since its statistics were reset (null: not known).",
            ),
        ),
        migrations.AddField(
            model_name="snapshot",
            name="evicted",
            field=models.BigIntegerField(
                blank=True,
                null=True,
                help_text="Times the server evicted entries since the previous snapshot (null: "
                "first snapshot, or not known): the interval's figures may be incomplete.",
            ),
        ),
        migrations.AddField(
            model_name="snapshot",
            name="statements_max",
            field=models.IntegerField(
                blank=True,
                null=True,
                help_text="pg_stat_statements.max on the server (null: not known): the setting "
                "to raise when entries are evicted.",
            ),
        ),
        migrations.AddField(
            model_name="monitoreddatabase",
            name="next_collection_at",
            field=models.DateTimeField(
                blank=True,
                null=True,
                help_text="When `collect --every` is next due to collect it; a collector claims "
                "it by moving this on by its period (null: due now).",
            ),
        ),
        migrations.AddField(
            model_name="monitoreddatabase",
            name="collection_period",
            field=models.DurationField(
                blank=True,
                null=True,
                help_text="The period of the `collect --every` that last claimed it (null: none "
                "yet): a collection older than that is overdue.",
            ),
        ),
    ]
