"""Admin for monitored databases and what collection stored.

The DSN holds a password, so it is never rendered back: the field is a password input
that starts empty, leaving it empty on edit keeps the stored DSN, and everywhere else
(lists, page titles, the admin log's object names, errors) the masked DSN is shown.
"""

from django import forms
from django.contrib import admin, messages
from django.template.defaultfilters import pluralize
from django.utils.html import format_html
from django.utils.text import Truncator
from psycopg import conninfo

from pganalytics.analytics.collector import CollectionError, outcome_of
from pganalytics.models import MonitoredDatabase, Query, Snapshot

LIST_ERROR_CHARS = 150  # the full error is the tooltip, and on the database's page


class SecretDSNField(forms.CharField):
    """A DSN typed into a password input; only a value typed in counts as a change."""

    widget = forms.PasswordInput(render_value=False)

    def has_changed(self, initial, data):
        return bool(data)


class MonitoredDatabaseForm(forms.ModelForm):
    dsn = SecretDSNField(
        label="DSN",
        required=False,
        help_text="libpq URL (postgresql://user:password@host:5432/db) or key=value string. "
        "The stored value is never shown; leave empty to keep it.",
    )

    class Meta:
        model = MonitoredDatabase
        fields = ["name", "dsn", "enabled"]

    def clean_dsn(self):
        dsn = self.cleaned_data["dsn"]
        if not dsn:
            if self.instance.pk:
                return self.instance.dsn
            raise forms.ValidationError("A DSN is required.")
        try:
            conninfo.conninfo_to_dict(dsn)
        except Exception:  # never echo the value: it holds the password
            raise forms.ValidationError("Not a valid libpq URL or key=value string.") from None
        scheme, separator, rest = dsn.partition("://")
        if separator and rest.split("/", 1)[0].count("@") > 1:
            # libpq would read what follows the password's "@" as the host.
            raise forms.ValidationError(
                'The URL has more than one "@" before the host: write an "@" of the user '
                "or password as %40."
            )
        return dsn


@admin.register(MonitoredDatabase)
class MonitoredDatabaseAdmin(admin.ModelAdmin):
    form = MonitoredDatabaseForm
    list_display = ["name", "masked_dsn", "enabled", "last_collected_at", "error"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    readonly_fields = ["masked_dsn", "created_at", "last_collected_at", "last_error"]
    actions = ["collect_now"]

    class Media:
        css = {"all": ["pganalytics/admin.css"]}  # the error column wraps

    def get_deleted_objects(self, objs, request):
        """What a deletion takes, counted rather than listed: a database's history is
        millions of rows, deleted set-wise with it (pganalytics.signals)."""
        deleted = [
            f"{database.name}: {database.snapshots.count()} snapshots and "
            f"{database.queries.count()} queries, with their history"
            for database in objs
        ]
        return deleted, {"monitored databases": len(objs)}, set(), []

    @admin.display(description="DSN (masked)")
    def masked_dsn(self, database):
        return database.masked_dsn

    @admin.display(description="last error", ordering="last_error")
    def error(self, database):
        shortened = Truncator(database.last_error).chars(LIST_ERROR_CHARS)
        return format_html('<span title="{}">{}</span>', database.last_error, shortened)

    @admin.action(description="Collect a snapshot now")
    def collect_now(self, request, queryset):
        for database in queryset:
            snapshot = outcome_of(database)
            if isinstance(snapshot, CollectionError):
                self.message_user(request, str(snapshot), messages.ERROR)
            else:
                count = snapshot.statement_count
                message = (
                    f"{database.name}: snapshot of {count} statement{pluralize(count)} "
                    f"in {snapshot.duration_ms:.0f} ms"
                )
                if snapshot.warning:
                    self.message_user(request, f"{message} ({snapshot.warning})", messages.WARNING)
                else:
                    self.message_user(request, message, messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Collected data: written by collection only, browsable and deletable here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    list_display = [
        "database", "taken_at", "statement_count", "reset_detected", "duration_ms", "stats_reset",
        "warning",
    ]
    list_filter = ["database", "reset_detected"]
    date_hierarchy = "taken_at"
    list_select_related = ["database"]


@admin.register(Query)
class QueryAdmin(ReadOnlyAdmin):
    list_display = ["fingerprint", "database", "short_text", "parsed", "first_seen", "last_seen"]
    list_filter = ["database", "parsed"]
    search_fields = ["fingerprint", "text"]
    list_select_related = ["database"]

    def has_delete_permission(self, request, obj=None):
        return False  # a query's history goes with its database

    @admin.display(description="text")
    def short_text(self, query):
        return Truncator(query.text).chars(100)
