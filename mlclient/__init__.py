"""mlclient: a reusable Django app calling the ML service (DESIGN: its public surface).

    from mlclient import MLClient, Prediction, PredictionError, TrainingJob, ModelInfo
    from mlclient import MLServiceError, ServiceUnavailable, BadRequest, CircuitOpen

It knows nothing of the project that installs it: the service's address, timeouts, retries
and breaker come from Django settings (MLClient.from_settings), the incoming request's id
from the function the setting MLCLIENT_REQUEST_ID names.
"""

from mlclient.client import MLClient
from mlclient.errors import BadRequest, CircuitOpen, MLServiceError, ServiceUnavailable
from mlclient.results import (
    ModelInfo,
    Prediction,
    PredictionError,
    PredictionUnavailable,
    TrainingJob,
)

__all__ = [
    "BadRequest",
    "CircuitOpen",
    "MLClient",
    "MLServiceError",
    "ModelInfo",
    "Prediction",
    "PredictionError",
    "PredictionUnavailable",
    "ServiceUnavailable",
    "TrainingJob",
]
