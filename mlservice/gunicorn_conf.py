"""gunicorn settings of the ML service; `manage.py mlservice` passes --bind and --workers.

Sync workers, no preloading: each worker imports mlservice.wsgi itself, which loads the current
model version and starts its watch in that process. Named explicitly (`--config`), so the web
app's ./gunicorn.conf.py, whose hooks empty the Prometheus directory, is not read.
"""

wsgi_app = "mlservice.wsgi:application"
worker_class = "sync"
preload_app = False
# gunicorn 27's control socket has one default path per user: a second gunicorn (the web app,
# another service) would take it over.
control_socket_disable = True
