"""The process' shared MLClient, built from Django settings (MLClient.from_settings)."""

import os
import threading

from django.conf import settings
from django.utils.module_loading import import_string

_lock = threading.Lock()
_shared = {}  # overrides -> (the options and pid it was built for, the client)


def settings_options():
    """MLClient's keywords from the settings ML_SERVICE_URL, ML_SERVICE_TIMEOUT,
    MAX_HTTP_CONNS, RETRY_* and CIRCUIT_*; MLCLIENT_REQUEST_ID names the function giving
    the incoming request's id."""
    request_id = getattr(settings, "MLCLIENT_REQUEST_ID", None)
    return {
        "base_url": settings.ML_SERVICE_URL,
        "read_timeout": settings.ML_SERVICE_TIMEOUT,
        "pool_size": settings.MAX_HTTP_CONNS,
        "max_retries": settings.RETRY_MAX_ATTEMPTS,
        "backoff_initial": settings.RETRY_INITIAL_BACKOFF,
        "backoff_multiplier": settings.RETRY_BACKOFF_MULTIPLIER,
        "backoff_max": settings.RETRY_MAX_BACKOFF,
        "failure_threshold": settings.CIRCUIT_FAILURE_THRESHOLD,
        "reset_timeout": settings.CIRCUIT_RESET_TIMEOUT,
        "request_id": import_string(request_id) if request_id else None,
    }


def shared_client(client_class, **overrides):
    """The process' client for the settings' options with `overrides` (one per distinct
    set of overrides: each has its own pool and breaker)."""
    options = {**settings_options(), **overrides}
    built_for = (os.getpid(), options)
    name = tuple(sorted(overrides.items()))
    held = _shared.get(name)
    if held is not None and held[0] == built_for:
        return held[1]
    with _lock:
        held = _shared.get(name)
        if held is None or held[0] != built_for:
            options = dict(options)
            held = _shared[name] = (built_for, client_class(options.pop("base_url"),
                                                            **options))
        return held[1]
