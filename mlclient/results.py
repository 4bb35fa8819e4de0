"""The answers of the ML service as dataclasses (fields as in the v1 contract)."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """The predicted mean latency (ms) of the fingerprint's next interval, its 80 % interval,
    the model that made it and its source ("model" or "baseline"). `stale` is True when it
    is the last good value kept by mlclient.predictions while the service cannot answer."""

    fingerprint: str
    scenario: str
    predicted_ms: float
    confidence: float
    interval_ms: tuple[float, float]
    model_version: str
    source: str
    stale: bool = False

    available = True

    @classmethod
    def from_json(cls, answer):
        return cls(
            fingerprint=answer["fingerprint"],
            scenario=answer["scenario"],
            predicted_ms=float(answer["predicted_ms"]),
            confidence=float(answer["confidence"]),
            interval_ms=tuple(float(bound) for bound in answer["interval_ms"]),
            model_version=answer["model_version"],
            source=answer["source"],
        )


@dataclass(frozen=True)
class PredictionError:
    """The service refused this item of a batch (or this single prediction): `error` says
    why, `field` where (e.g. `items[3].features.mean_ms`)."""

    fingerprint: str
    scenario: str
    error: str
    field: str | None = None

    available = False


@dataclass(frozen=True)
class PredictionUnavailable:
    """No prediction and no last good value: the service could not be asked (`reason`)."""

    fingerprint: str
    scenario: str
    reason: str

    available = False


@dataclass(frozen=True)
class TrainingJob:
    """A training job: `status` is queued, running, done or failed; `accepted` whether its
    model replaced the current one (None until done), `reason` why not."""

    job_id: str
    status: str
    model_version: str | None = None
    accepted: bool | None = None
    metrics: dict = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, answer):
        return cls(
            job_id=answer["job_id"],
            status=answer["status"],
            model_version=answer.get("model_version"),
            accepted=answer.get("accepted"),
            metrics=answer.get("metrics") or {},
            reason=answer.get("reason"),
            error=answer.get("error"),
        )


@dataclass(frozen=True)
class ModelInfo:
    """The model the service answers with ("baseline" before any model was accepted)."""

    model_version: str
    feature_names: tuple[str, ...]
    metrics: dict
    trained_at: str | None
    source: str

    @classmethod
    def from_json(cls, answer):
        return cls(
            model_version=answer["model_version"],
            feature_names=tuple(answer["feature_names"]),
            metrics=answer.get("metrics") or {},
            trained_at=answer.get("trained_at"),
            source=answer["source"],
        )
