"""The v1 contract (DESIGN.md, "ML service contract"); its document: mlservice.openapi."""

from django.urls import path

from mlservice import errors, views
from mlservice.errors import endpoint

urlpatterns = [
    path("health", endpoint(GET=views.health)),
    path("api/v1/predict", endpoint(POST=views.predict)),
    path("api/v1/predict/batch", endpoint(POST=views.predict_batch)),
    path("api/v1/train", endpoint(POST=views.train)),
    path("api/v1/train/<str:job_id>", endpoint(GET=views.training_status)),
    path("api/v1/model", endpoint(GET=views.model)),
    path("api/v1/openapi.json", endpoint(GET=views.openapi)),
]

handler400 = errors.bad_request
handler404 = errors.page_not_found
handler500 = errors.server_error

