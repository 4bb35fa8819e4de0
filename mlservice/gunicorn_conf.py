"""gunicorn settings of the ML service; `manage.py mlservice` passes --bind and --workers.

Threaded workers (gthread) so that connections stay open between requests: the sync worker
closes every connection after its answer, which makes a client's connection pool useless
(each call pays a new TCP connection). One request thread per worker, as the sync worker
ran: idle keep-alive connections wait in the worker's poller, not in a thread. Answers go
out without Nagle's delay: gunicorn sets TCP_NODELAY on the listening socket and Linux
gives it to every accepted connection, so the headers and the body, written in two sends,
do not wait for the client's delayed ACK.

No preloading: each worker imports mlservice.wsgi itself, which loads the current model
version and starts its watch in that process. Named explicitly (`--config`), so the web
app's ./gunicorn.conf.py, whose hooks empty the Prometheus directory, is not read.
"""

wsgi_app = "mlservice.wsgi:application"
worker_class = "gthread"
threads = 1
# Longer than a client's pause between calls, so a pooled connection is rarely closed by
# the server just as the client sends on it.
keepalive = 30
preload_app = False
# gunicorn 27's control socket has one default path per user: a second gunicorn (the web app,
# another service) would take it over.
control_socket_disable = True
