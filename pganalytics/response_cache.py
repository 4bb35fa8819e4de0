"""Whole JSON responses cached in the `responses` cache, per user and per data version.

The key holds the path, the sorted query string, the user and their permissions, and the
data version (the newest snapshot id the answer depends on): a new snapshot changes the
version, so answers computed before it are never served again, in any process, without
knowing their keys. Responses say `X-Cache: hit|miss` and are private to the user. A view
marks an answer not worth keeping (one that holds a transient failure) with `no-store`.
"""

import hashlib
from functools import wraps

from django.core.cache import caches
from django.http import HttpResponse
from django.utils.cache import patch_cache_control

CACHE_ALIAS = "responses"


def response_key(request, version):
    query = "&".join(sorted(request.GET.urlencode().split("&")))
    permissions = ",".join(sorted(request.user.get_all_permissions()))
    identity = f"{request.path}?{query}|user={request.user.pk}|perms={permissions}|v={version}"
    return "response:" + hashlib.sha256(identity.encode()).hexdigest()


def has_no_store(response):
    return "no-store" in response.get("Cache-Control", "")


def cached_response(version_of):
    """Cache a GET view's 200 responses but those marked `Cache-Control: no-store`;
    `version_of(request, **kwargs)` gives the data version."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            cache = caches[CACHE_ALIAS]
            key = response_key(request, version_of(request, **kwargs))
            cached = cache.get(key)
            if cached is not None:
                content, content_type = cached
                response = HttpResponse(content, content_type=content_type)
                state = "hit"
            else:
                response = view(request, *args, **kwargs)
                if response.status_code == 200 and not has_no_store(response):
                    cache.set(key, (response.content, response["Content-Type"]))
                state = "miss"
            response["X-Cache"] = state
            patch_cache_control(response, private=True, max_age=0, must_revalidate=True)
            return response

        return wrapper

    return decorator
