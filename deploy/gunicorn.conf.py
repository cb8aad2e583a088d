"""gunicorn settings of the portal's web service (deploy/soa-portal-web.service runs
``gunicorn -c deploy/gunicorn.conf.py portal.wsgi``). Each can be changed through the environment named beside it.

- Workers: a Django request is mostly waiting on PostgreSQL, Redis or a directory bind, so 2 per CPU + 1 (gunicorn's
  own advice); GUNICORN_WORKERS overrides it (the CI test runs 2 on a small machine).
- Timeouts: the slowest page the portal serves synchronously is the connection test (a directory bind and an Exchange
  call, each bounded at LDAP_TIMEOUT_SECONDS / EXO_TIMEOUT_SECONDS); everything longer runs on the workers.
- The access log records no query string (search terms can hold names and addresses) and no cookies or
  Authorization header: only the path, the status, the size, the time taken and the request id.
- X-Forwarded-Proto and X-Forwarded-For are believed only from the proxy's address (GUNICORN_FORWARDED_ALLOW_IPS,
  default loopback: the proxy on the same host). Django trusts X-Forwarded-Proto only with DJANGO_BEHIND_TLS_PROXY.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "0")) or multiprocessing.cpu_count() * 2 + 1
worker_class = "sync"
# Long enough for the slowest synchronous page (the connection test: LDAP bind + an Exchange call, 120 s by default
# at most), so gunicorn does not kill a worker that is still waiting on an answer.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "150"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# A worker restarts after this many requests (with jitter, so they do not all restart at once): bounds slow leaks.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = 200
# Requests line and header limits: the portal needs no more than gunicorn's defaults.
limit_request_line = 8190
limit_request_fields = 100

forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proxy_allow_ips = forwarded_allow_ips
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")  # stdout: the journal keeps it
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# %(U)s is the path without its query string; %({x-request-id}o)s the id RequestIdMiddleware answers with, which the
# portal's own log lines carry too.
access_log_format = '%({x-forwarded-for}i)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
# Nothing of the portal is imported before the workers fork: each opens its own database and Redis connections.
preload_app = False
# The control socket (gunicorn 24+) is not used by the portal's units.
control_socket_disable = True
