"""What the ML service keeps in the app's database: the model versions it has trained (one of
them current, the one every worker serves) and the training jobs, rows a runner claims."""

import uuid

from django.db import models


class ModelVersion(models.Model):
    """A fitted predictor, pickled, with the sha256 of the pickle: a worker loads a version
    only if its bytes are the ones stored. At most one version is current."""

    version = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    feature_names = models.JSONField(help_text="The feature names the predictor reads, in order.")
    metrics = models.JSONField(default=dict, help_text="Held-out metrics, with the baselines'.")
    checksum = models.CharField(max_length=64, help_text="sha256 of `pickled`, in hex.")
    pickled = models.BinaryField()
    current = models.BooleanField(default=False, help_text="The version the service answers with.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["current"], condition=models.Q(current=True), name="one_current_model"
            )
        ]

    def __str__(self):
        return self.version


class TrainingJob(models.Model):
    """One request to train. A runner claims a queued job (FOR UPDATE SKIP LOCKED), refreshes
    `heartbeat_at` while it trains, and ends it done or failed; a running job whose heartbeat
    stopped is marked failed by whoever sees it first (mlservice.jobs.reap). At most one job
    is queued: requests while it waits are answered with it (mlservice.jobs.enqueue)."""

    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
    STATUSES = [(status, status) for status in (QUEUED, RUNNING, DONE, FAILED)]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=8, choices=STATUSES, default=QUEUED)
    lookback_days = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    runner = models.CharField(max_length=255, blank=True, help_text="host:pid of its runner.")
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    accepted = models.BooleanField(
        null=True, blank=True, help_text="Its model beat the better baseline and became current."
    )
    metrics = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="", help_text="Why its model was (not) taken.")
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="queued"), name="one_queued_job"
            )
        ]
        indexes = [
            models.Index(
                fields=["created_at"], condition=models.Q(status="queued"), name="job_queued"
            ),
            models.Index(
                fields=["heartbeat_at"], condition=models.Q(status="running"), name="job_running"
            ),
        ]

    def __str__(self):
        return f"{self.id} {self.status}"
