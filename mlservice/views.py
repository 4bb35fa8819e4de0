"""The v1 contract's views, each answering JSON. A BadInput they raise is a 400 naming its
field, an Unavailable a 503 (mlservice.errors.endpoint, which also answers other methods)."""

import uuid

from django.http import JsonResponse

from mlservice import contract, jobs
from mlservice.models import TrainingJob
from mlservice.openapi import DOCUMENT
from mlservice.serving import BASELINE, SERVING


def health(request):
    loaded = SERVING.answering()
    version = None if loaded.version == BASELINE else loaded.version
    return JsonResponse({"status": "ok", "model_version": version})


def predict(request):
    fingerprint, scenario, features = contract.predict_request(contract.json_body(request))
    loaded = SERVING.answering()
    (estimate,) = loaded.predictor.predict([features])
    return JsonResponse(prediction(loaded, fingerprint, scenario, estimate))


def predict_batch(request):
    """Valid items are predicted together (one call: the predictor is vectorised); each
    invalid one gets its error in its place."""
    items = contract.batch_items(contract.json_body(request))
    loaded = SERVING.answering()
    answers, valid = [], []
    for index, item in enumerate(items):
        try:
            valid.append((index, contract.predict_request(item, f"items[{index}]")))
            answers.append(None)
        except contract.BadInput as error:
            answers.append(error.as_json())
    estimates = loaded.predictor.predict([features for _, (_, _, features) in valid])
    for (index, (fingerprint, scenario, _)), estimate in zip(valid, estimates, strict=True):
        answers[index] = prediction(loaded, fingerprint, scenario, estimate)
    return JsonResponse({"items": answers})


def prediction(loaded, fingerprint, scenario, estimate):
    predicted, low, high = (max(0.0, float(value)) for value in estimate)
    return {
        "fingerprint": fingerprint,
        "scenario": scenario,
        "predicted_ms": predicted,
        "confidence": confidence(predicted, low, high),
        "interval_ms": [low, high],
        "model_version": loaded.version,
        "source": loaded.predictor.source,
    }


def confidence(predicted, low, high):
    """1 for an interval of no width, falling towards 0 as the 80 % interval widens relative
    to the prediction: 1 / (1 + width / (2 x predicted)); 0.5 when it spans ± the prediction."""
    width = high - low
    if width <= 0:
        return 1.0
    if predicted <= 0:
        return 0.0
    return 1.0 / (1.0 + width / (2.0 * predicted))


def train(request):
    job = jobs.enqueue(contract.lookback_days(contract.json_body(request)))
    return JsonResponse({"job_id": str(job.id), "status": job.status}, status=202)


def training_status(request, job_id):
    jobs.reap()  # a job whose runner died reads as failed, even with no runner left to see it
    try:
        job = TrainingJob.objects.select_related("model_version").get(pk=uuid.UUID(job_id))
    except (ValueError, TrainingJob.DoesNotExist):
        return JsonResponse({"error": f"no training job {job_id}"}, status=404)
    return JsonResponse({
        "job_id": str(job.id),
        "status": job.status,
        "model_version": job.model_version.version if job.model_version else None,
        "accepted": job.accepted,
        "metrics": job.metrics,
        "reason": job.reason or None,
        "error": job.error or None,
    })


def model(request):
    loaded = SERVING.answering()
    return JsonResponse({
        "model_version": loaded.version,
        "feature_names": list(loaded.predictor.feature_names),
        "metrics": loaded.metrics,
        "trained_at": loaded.trained_at.isoformat() if loaded.trained_at else None,
        "source": loaded.predictor.source,
    })


def openapi(request):
    return JsonResponse(DOCUMENT)
