"""Whole JSON responses cached in the `responses` cache, per user and per data version.

The key holds the view, its validated arguments (the URL's, and the query parameters the
view reads, as parsed: `?window=1d` and `?window=24h` share an entry, unknown parameters add
none), the user and their permissions, and the data version of what the answer depends on
(pganalytics.analytics.data_version): a new snapshot changes the version, so answers
computed before it are never served again, in any process, without knowing their keys.
Responses say `X-Cache: hit|miss` and are private to the user. A view marks an answer not worth keeping (one that
holds a transient failure) with `no-store`.
"""

import hashlib
from functools import wraps

from django.core.cache import caches
from django.http import HttpResponse
from django.utils.cache import patch_cache_control

CACHE_ALIAS = "responses"


def response_key(request, view, arguments, version):
    permissions = ",".join(sorted(request.user.get_all_permissions()))
    identity = (
        f"{view.__module__}.{view.__qualname__}|{sorted(arguments.items())!r}"
        f"|user={request.user.pk}|perms={permissions}|v={version}"
    )
    return "response:" + hashlib.sha256(identity.encode()).hexdigest()


def no_parameters(request):
    return {}


def has_no_store(response):
    return "no-store" in response.get("Cache-Control", "")


def cached_response(version_of, params_of=no_parameters):
    """Cache a GET or HEAD view's 200 responses (one entry for both: the view renders the body
    either way) but those marked `Cache-Control: no-store`. `version_of(request, **kwargs)`
    gives the data version; `params_of(request)` the view's query parameters as a dict of
    validated values, passed to the view as keyword arguments (a bad value raises before any
    lookup)."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, **kwargs):
            params = params_of(request)
            cache = caches[CACHE_ALIAS]
            key = response_key(request, view, {**kwargs, **params}, version_of(request, **kwargs))
            cached = cache.get(key)
            if cached is not None:
                content, content_type = cached
                response = HttpResponse(content, content_type=content_type)
                state = "hit"
            else:
                response = view(request, **kwargs, **params)
                if response.status_code == 200 and not has_no_store(response):
                    cache.set(key, (response.content, response["Content-Type"]))
                state = "miss"
            response["X-Cache"] = state
            patch_cache_control(response, private=True, max_age=0, must_revalidate=True)
            return response

        return wrapper

    return decorator
