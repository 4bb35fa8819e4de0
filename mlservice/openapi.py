"""The OpenAPI 3.0 document of the v1 contract (GET /api/v1/openapi.json), built from the
limits mlservice.contract enforces, so that the document and the checks say the same."""

from mlservice.contract import (
    MAX_BATCH_ITEMS,
    MAX_FEATURE_VALUE,
    MAX_FINGERPRINT_LENGTH,
    MAX_LOOKBACK_DAYS,
)
from mlservice.models import TrainingJob
from pganalytics.analytics.features import FEATURE_NAMES, SCENARIOS

STATUSES = [status for status, _ in TrainingJob.STATUSES]
SOURCES = ["model", "baseline"]


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind, **more):
    return {"type": kind, "nullable": True, **more}


def json_content(schema, description):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    400: json_content(ref("Error"), "bad input: `field` names what is wrong"),
    404: json_content(ref("Error"), "no such job"),
    503: json_content(ref("Error"), "nothing can answer yet (no model loaded, database down)"),
}


def operation(summary, answers, body=None, errors=(503,)):
    """An operation: `answers` {status: (schema name, description)}, `body` a schema name."""
    responses = {
        str(status): json_content(ref(schema), description)
        for status, (schema, description) in answers.items()
    }
    responses.update({str(status): ERRORS[status] for status in errors})
    found = {"summary": summary, "responses": responses}
    if body:
        found["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": ref(body)}}
        }
    return found


SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
    },
    "ItemError": {
        "type": "object",
        "required": ["error", "field"],
        "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
    },
    "Features": {
        "type": "object",
        "description": "Every name of pganalytics' FEATURE_NAMES, none other.",
        "required": list(FEATURE_NAMES),
        "additionalProperties": False,
        "properties": {
            name: {"type": "number", "minimum": 0, "maximum": MAX_FEATURE_VALUE}
            for name in FEATURE_NAMES
        },
    },
    "PredictRequest": {
        "type": "object",
        "required": ["fingerprint", "features"],
        "additionalProperties": False,
        "properties": {
            "fingerprint": {
                "type": "string", "minLength": 1, "maxLength": MAX_FINGERPRINT_LENGTH,
            },
            "features": ref("Features"),
            "scenario": {"type": "string", "enum": list(SCENARIOS), "default": "current"},
        },
    },
    "Prediction": {
        "type": "object",
        "required": [
            "fingerprint", "scenario", "predicted_ms", "confidence", "interval_ms",
            "model_version", "source",
        ],
        "properties": {
            "fingerprint": {"type": "string"},
            "scenario": {"type": "string", "enum": list(SCENARIOS)},
            "predicted_ms": {"type": "number", "minimum": 0},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "interval_ms": {
                "type": "array", "minItems": 2, "maxItems": 2,
                "items": {"type": "number", "minimum": 0},
                "description": "The 80 % interval: [low, high].",
            },
            "model_version": {"type": "string", "description": '"baseline" before any model'},
            "source": {"type": "string", "enum": SOURCES},
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["items"],
        "additionalProperties": False,
        "properties": {
            "items": {
                "type": "array",
                "maxItems": MAX_BATCH_ITEMS,
                "description": "PredictRequest objects; one that is not valid gets an "
                "ItemError in its place, the others are answered.",
                "items": {},
            }
        },
    },
    "BatchResponse": {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": {"oneOf": [ref("Prediction"), ref("ItemError")]},
            }
        },
    },
    "TrainRequest": {
        "type": "object",
        "required": ["lookback_days"],
        "additionalProperties": False,
        "properties": {
            "lookback_days": {"type": "integer", "minimum": 1, "maximum": MAX_LOOKBACK_DAYS}
        },
    },
    "TrainAccepted": {
        "type": "object",
        "required": ["job_id", "status"],
        "properties": {
            "job_id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": ["queued"]},
        },
    },
    "TrainingJob": {
        "type": "object",
        "required": ["job_id", "status", "model_version", "accepted", "metrics", "reason", "error"],
        "properties": {
            "job_id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": STATUSES},
            "model_version": nullable("string", description="the version it trained"),
            "accepted": nullable(
                "boolean", description="its version beat the better baseline and is served"
            ),
            "metrics": nullable(
                "object",
                description="held-out metrics of the model and of the better baseline",
                properties={
                    "mae_ms": nullable("number"),
                    "baseline_mae_ms": nullable("number"),
                    "coverage_80": nullable("number"),
                    "samples": nullable("integer"),
                },
            ),
            "reason": nullable("string", description="why its version was (not) taken"),
            "error": nullable("string", description="why it failed"),
        },
    },
    "ModelInfo": {
        "type": "object",
        "required": ["model_version", "feature_names", "metrics", "trained_at", "source"],
        "properties": {
            "model_version": {"type": "string"},
            "feature_names": {"type": "array", "items": {"type": "string"}},
            "metrics": {"type": "object"},
            "trained_at": nullable("string", format="date-time"),
            "source": {"type": "string", "enum": SOURCES},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "model_version"],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "model_version": nullable("string", description="null: the baseline answers"),
        },
    },
}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {
        "title": "pganalytics ML service",
        "version": "1",
        "description": "Latency predictions of PostgreSQL statements from their features.",
    },
    "paths": {
        "/health": {"get": operation("Is it answering", {200: ("Health", "it answers")})},
        "/api/v1/predict": {
            "post": operation(
                "Predict one statement's next mean latency",
                {200: ("Prediction", "the prediction")},
                body="PredictRequest",
                errors=(400, 503),
            )
        },
        "/api/v1/predict/batch": {
            "post": operation(
                f"Predict up to {MAX_BATCH_ITEMS} statements at once",
                {200: ("BatchResponse", "an answer per item, in order")},
                body="BatchRequest",
                errors=(400, 503),
            )
        },
        "/api/v1/train": {
            "post": operation(
                "Queue a training job",
                {202: ("TrainAccepted", "queued")},
                body="TrainRequest",
                errors=(400, 503),
            )
        },
        "/api/v1/train/{job_id}": {
            "parameters": [
                {
                    "name": "job_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "format": "uuid"},
                }
            ],
            "get": operation(
                "A training job", {200: ("TrainingJob", "the job")}, errors=(404, 503)
            ),
        },
        "/api/v1/model": {
            "get": operation("The model that answers", {200: ("ModelInfo", "the model")})
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": json_content({"type": "object"}, "OpenAPI 3.0")},
            }
        },
    },
    "components": {"schemas": SCHEMAS},
}
