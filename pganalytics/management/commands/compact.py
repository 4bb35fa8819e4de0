"""`manage.py compact`: roll up the history, make partitions ahead and apply retention."""

from django.core.management.base import BaseCommand

from pganalytics.formats import timestamp
from pganalytics.analytics.history import compact


class Command(BaseCommand):
    help = (
        "Sum raw intervals into hourly and daily rollups, make the coming days' partitions and "
        "drop what RAW_RETENTION, HOURLY_RETENTION and DAILY_RETENTION (daily rows, plan "
        "samples) let go. Idempotent; safe beside another compact (which then does nothing). "
        "`collect --every` runs it too."
    )

    def handle(self, *args, **options):
        done = compact()
        if done.skipped:
            self.stdout.write("compact: another compaction is running; nothing done")
            return
        self.stdout.write(
            f"compact: {done.hours} hour(s) and {done.days} day(s) rolled up "
            f"(hourly to {describe(done.hourly_to)}, daily to {describe(done.daily_to)}); "
            f"dropped {len(done.dropped_raw)} raw and {len(done.dropped_hourly)} hourly "
            f"day partition(s), {done.deleted_daily} daily row(s), {done.deleted_plans} "
            f"plan sample(s), {done.deleted_snapshots} snapshot(s)"
        )


def describe(moment):
    return timestamp(moment) if moment else "nothing yet"
