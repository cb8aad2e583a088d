"""SOA Portal settings: one module, driven by environment variables.

Defaults are safe and work for local use (SQLite file, the sandbox endpoints). Production differs only by
values: DJANGO_DEBUG stays off, DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is then required, and the
secure cookie and header settings switch on. Every variable is listed in docs/configuration.md.

FileAwareEnv lets any variable be given as NAME_FILE, a path whose content is the value, so secrets can
come from mounted files instead of the process environment.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

# The cloud table lives in portal, not in writeback.exchange: settings are read by every layer, so they may import
# only from the bottom one (docs/architecture.md, Layers); the Exchange client imports the table from here too.
from portal.clouds import cloud_named
from portal.redis_config import SOCKET_TIMEOUT, rq_queues, sentinel_settings

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.FileAwareEnv()

DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required when DJANGO_DEBUG is off. "
            "For local use set DJANGO_DEBUG=true, which uses a development-only key."
        )
    SECRET_KEY = "django-insecure-development-only-key-never-used-with-debug-off"  # noqa: S105

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_rq",
    "portal",
    "soa",
    "writeback",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.middleware.RequestIdMiddleware",
    "portal.middleware.HtmxVaryMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "portal.middleware.ReadOnlyAuditorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.middleware.SecurityHeadersMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.navigation",
            ],
        },
    },
]

# SQLite is the embedded default (make demo); DATABASE_URL selects PostgreSQL (CI, production).
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'portal.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # IMMEDIATE takes the write lock when a transaction starts, so two writers queue instead of one
    # failing half-way with "database is locked" (the audit chain reads its head, then appends).
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "portal.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-in throttling (portal.signin): this many failures for one user name, or from one client address, within the
# window lock that name or address for the lock-out period (0 switches a count off). Behind a reverse proxy, name the
# header it puts the client's address in (its last value is used); by default the socket's address is counted.
SIGNIN_USERNAME_FAILURE_LIMIT = env.int("SIGNIN_USERNAME_FAILURE_LIMIT", default=5)
SIGNIN_ADDRESS_FAILURE_LIMIT = env.int("SIGNIN_ADDRESS_FAILURE_LIMIT", default=20)
SIGNIN_FAILURE_WINDOW_MINUTES = env.int("SIGNIN_FAILURE_WINDOW_MINUTES", default=15)
SIGNIN_LOCKOUT_MINUTES = env.int("SIGNIN_LOCKOUT_MINUTES", default=15)
SIGNIN_CLIENT_ADDRESS_HEADER = env.str("SIGNIN_CLIENT_ADDRESS_HEADER", default="")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "var" / "static")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Security: on unless debugging. Each can still be set on its own (for example behind a TLS proxy).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("DJANGO_BEHIND_TLS_PROXY", False) else None
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # the token reaches htmx through hx-headers on <body>, never through the cookie
SESSION_COOKIE_AGE = env.int("DJANGO_SESSION_SECONDS", default=8 * 3600)
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy of every page (portal.middleware.SecurityHeadersMiddleware; empty: no header). Scripts and
# styles come from the portal's own files only: templates hold no inline script, on* handler or style attribute,
# and htmx's own indicator <style> is switched off in base.html (its CSS is in portal.css). Images may be data: URIs
# (the admin site's icons). django-rq's job dashboard (/jobs/, admin only, read-only) lays its pages out with inline
# <style> blocks, so it gets CONTENT_SECURITY_POLICY_JOBS, which allows inline styles but still no inline script: its
# queue pages' inline script is blocked, which only disables the bulk-action checkboxes of a dashboard that refuses
# every action anyway (portal.decorators.read_only).
_CSP_REST = (
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY", default=f"default-src 'self'; script-src 'self'; style-src 'self'; {_CSP_REST}"
)
CONTENT_SECURITY_POLICY_JOBS = env.str(
    "CONTENT_SECURITY_POLICY_JOBS",
    default=f"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; {_CSP_REST}",
)
# Browser features no page of the portal uses, switched off for it and anything it might embed.
PERMISSIONS_POLICY = env.str(
    "PERMISSIONS_POLICY",
    default="accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=(), display-capture=(), serial=(), hid=()",
)

# Background work: RQ on Redis. Queue "writeback" carries AD writes so they never wait behind imports. Redis is
# REDIS_URL, or, when REDIS_SENTINELS lists Sentinels ("host1:26379,host2:26379"), the master they know as
# REDIS_SENTINEL_MASTER (portal/redis_config.py; docs/deployment.md, Redis Sentinel).
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_SENTINEL = sentinel_settings(
    env.str("REDIS_SENTINELS", default=""),
    env.str("REDIS_SENTINEL_MASTER", default=""),
    db=env.int("REDIS_DB", default=0),
    password=env.str("REDIS_PASSWORD", default=""),
    sentinel_password=env.str("REDIS_SENTINEL_PASSWORD", default=""),
    socket_timeout=env.float("REDIS_SOCKET_TIMEOUT", default=SOCKET_TIMEOUT),
)
RQ_QUEUES = rq_queues(REDIS_URL, REDIS_SENTINEL)
RQ_SHOW_ADMIN_LINK = False
# `manage.py rqworker` runs the portal's worker: it arms the periodic jobs at start and checks them every
# WORKER_WATCH_SECONDS, and waits out a Redis outage instead of exiting (writeback/worker.py).
RQ = {"WORKER_CLASS": "writeback.worker.Worker"}
WORKER_WATCH_SECONDS = env.int("WORKER_WATCH_SECONDS", default=30)
# A running wave idle this long whose batch is not in Redis (it never got there: Redis was down) is queued again by
# the next sweep, without waiting for the ten minutes after which any idle wave is.
WAVE_REQUEUE_AFTER_SECONDS = env.int("WAVE_REQUEUE_AFTER_SECONDS", default=60)
# How many batches of one wave may run at once on different workers (writeback/wave_spread.py); the wave's rate holds
# across them. 1: one batch at a time.
WAVE_PARALLEL_BATCHES = env.int("WAVE_PARALLEL_BATCHES", default=1)
# Seconds between runs of the wave sweep (writeback.wave_schedule), which frees members a dead worker left.
WAVE_SWEEP_INTERVAL = env.int("WAVE_SWEEP_INTERVAL", default=300)
# A dead worker is found in seconds, not at the next sweep: a running batch writes a heartbeat on its members every
# WAVE_HEARTBEAT_SECONDS, and every worker checks every WAVE_WATCH_SECONDS for members whose heartbeat is older than
# WAVE_STALE_SECONDS (several missed beats: a database hiccup is not a death), returns them and queues their wave.
WAVE_HEARTBEAT_SECONDS = env.float("WAVE_HEARTBEAT_SECONDS", default=2.0)
WAVE_STALE_SECONDS = env.float("WAVE_STALE_SECONDS", default=10.0)
WAVE_WATCH_SECONDS = env.float("WAVE_WATCH_SECONDS", default=3.0)

# Active Directory (the sandbox slapd in demo and tests). The password only ever comes from a file.
LDAP_URL = env.str("LDAP_URL", default="")
LDAP_BIND_DN = env.str("LDAP_BIND_DN", default="")
LDAP_PASSWORD_FILE = env.str("LDAP_PASSWORD_FILE", default="")
LDAP_BASE_DN = env.str("LDAP_BASE_DN", default="")
LDAP_CA_FILE = env.str("LDAP_CA_FILE", default="")
# Plain ldap:// without LDAP_CA_FILE sends the bind password in clear: refused to any host but this machine (unless
# DJANGO_DEBUG), and reported by `manage.py check --deploy`, unless this is set for a network you trust.
LDAP_ALLOW_CLEARTEXT = env.bool("LDAP_ALLOW_CLEARTEXT", default=False)
LDAP_TIMEOUT_SECONDS = env.float("LDAP_TIMEOUT_SECONDS", default=5.0)
# Scheduled inventory imports (writeback/inventory_schedule.py; 0 switches one off): a full reconciliation, the
# only run that finds deleted objects, and an incremental import of what changed in between.
INVENTORY_FULL_INTERVAL_DAYS = env.int("INVENTORY_FULL_INTERVAL_DAYS", default=7)
INVENTORY_INCREMENTAL_INTERVAL_MINUTES = env.int("INVENTORY_INCREMENTAL_INTERVAL_MINUTES", default=60)
# Seconds a running import may go without a heartbeat (one per page written) before the sweep fails it as dead.
# The slowest legitimate page is about 17 minutes: EXO_MAX_ATTEMPTS (6) calls of EXO_TIMEOUT_SECONDS (120) with
# EXO_MAX_RETRY_AFTER_SECONDS (60) between them; 30 minutes leaves room for that, and with the sweep every 5 minutes
# a killed import is failed well before the next hourly scheduled one would find it still open.
INVENTORY_STALE_SECONDS = env.int("INVENTORY_STALE_SECONDS", default=1800)

# Exchange Online admin API and Microsoft Graph, app-only through Entra ID (msal). Credentials come from files only.
# EXO_CLOUD picks Microsoft's hosts for the cloud the tenant lives in (portal/clouds.py); each
# derived URL and scope can still be set on its own. Every URL must be https (check writeback.E001).
EXO_CLOUD = env.str("EXO_CLOUD", default="Global")
_CLOUD = cloud_named(EXO_CLOUD)
EXO_TENANT = env.str("EXO_TENANT", default="")
EXO_BASE_URL = env.str("EXO_BASE_URL", default=_CLOUD.exchange)
EXO_SCOPE = env.str("EXO_SCOPE", default=_CLOUD.exchange_scope)
GRAPH_BASE_URL = env.str("GRAPH_BASE_URL", default=_CLOUD.graph)
GRAPH_SCOPE = env.str("GRAPH_SCOPE", default=_CLOUD.graph_scope)
ENTRA_AUTHORITY = env.str("ENTRA_AUTHORITY", default=_CLOUD.authority(EXO_TENANT))
ENTRA_CLIENT_ID = env.str("ENTRA_CLIENT_ID", default="")
ENTRA_CLIENT_SECRET_FILE = env.str("ENTRA_CLIENT_SECRET_FILE", default="")
ENTRA_CERTIFICATE_KEY_FILE = env.str("ENTRA_CERTIFICATE_KEY_FILE", default="")
ENTRA_CERTIFICATE_THUMBPRINT = env.str("ENTRA_CERTIFICATE_THUMBPRINT", default="")
ENTRA_CERTIFICATE_FILE = env.str("ENTRA_CERTIFICATE_FILE", default="")
EXO_CA_FILE = env.str("EXO_CA_FILE", default="")  # empty: the system's trust store
# Signing in (portal.entra_signin): people sign in with Entra ID through the same app registration (authorization code
# with PKCE; the sign-in page offers it once ENTRA_CLIENT_ID and a credential are set); their groups give their roles
# (group mappings, kept in the database). Local accounts stay for break-glass use unless LOCAL_SIGNIN_ENABLED is off.
ENTRA_SIGNIN_ENABLED = env.bool("ENTRA_SIGNIN_ENABLED", default=True)
LOCAL_SIGNIN_ENABLED = env.bool("LOCAL_SIGNIN_ENABLED", default=True)
# The anchor header's required form for app-only calls is not documented (exchange-facts §4.2): configurable.
EXO_ANCHOR_MAILBOX = env.str("EXO_ANCHOR_MAILBOX", default="")
EXO_TIMEOUT_SECONDS = env.float("EXO_TIMEOUT_SECONDS", default=120.0)
EXO_MAX_ATTEMPTS = env.int("EXO_MAX_ATTEMPTS", default=6)
EXO_PAGE_SIZE = env.int("EXO_PAGE_SIZE", default=1000)
EXO_RATE_LIMIT_PACING = env.bool("EXO_RATE_LIMIT_PACING", default=True)
# The paced budget is one for all worker processes, kept in Redis (writeback/exchange/shared_budget.py); off: each
# process paces from its own responses, as it also does while Redis does not answer.
EXO_SHARED_BUDGET = env.bool("EXO_SHARED_BUDGET", default=True)
# The longest Retry-After a call waits out in place; a longer one puts the job down and reschedules it.
EXO_MAX_RETRY_AFTER_SECONDS = env.float("EXO_MAX_RETRY_AFTER_SECONDS", default=60.0)
# A mailbox that answers 404 is retried for this long after the first 404 (replication lag, exchange-facts §4.3).
EXO_NOT_FOUND_RETRY_SECONDS = env.float("EXO_NOT_FOUND_RETRY_SECONDS", default=300.0)

# Pairing AD users with their Exchange objects (writeback/inventory_pairing.py): the AD attribute Entra Connect uses
# as sourceAnchor (mS-DS-ConsistencyGuid falls back to objectGUID when empty, as Connect does), and whether the
# inventory may ask Graph (User.Read.All) for users that msDS-ExternalDirectoryObjectID does not pair.
ENTRA_SOURCE_ANCHOR = env.str("ENTRA_SOURCE_ANCHOR", default="mS-DS-ConsistencyGuid")
INVENTORY_GRAPH_PAIRING = env.bool("INVENTORY_GRAPH_PAIRING", default=True)
# The inventory reads Exchange Online in a child process (its JSON decoding on another core) or, false, in a thread.
INVENTORY_READ_PROCESS = env.bool("INVENTORY_READ_PROCESS", default=True)
# A full import spread over this many worker processes (writeback/inventory_shards.py): its directory pass is split by
# OU subtree; 1 keeps it in one process.
INVENTORY_WORKERS = env.int("INVENTORY_WORKERS", default=1)
if INVENTORY_WORKERS < 1:
    raise ImproperlyConfigured(f"INVENTORY_WORKERS must be 1 or more (it is {INVENTORY_WORKERS}).")
# A part of a spread import whose worker has not beaten for this long is taken for dead and done by another.
INVENTORY_SHARD_STALE_SECONDS = env.int("INVENTORY_SHARD_STALE_SECONDS", default=120)
if INVENTORY_SHARD_STALE_SECONDS < 10:
    raise ImproperlyConfigured(
        f"INVENTORY_SHARD_STALE_SECONDS must be 10 or more (it is {INVENTORY_SHARD_STALE_SECONDS}): a part beats "
        "every 2 s and a page can take several."
    )

# Writeback policy: Microsoft's Cloud Sync never writes msExchHideFromAddressLists back; opt in here.
WRITEBACK_HIDE_FROM_ADDRESS_LISTS = env.bool("WRITEBACK_HIDE_FROM_ADDRESS_LISTS", default=False)
# Drift scans (writeback/jobs/drift.py): every DRIFT_SCAN_INTERVAL_MINUTES (0: off) the written-back attributes of
# cloud-managed mailboxes are compared between Exchange and AD, incrementally, with a full scan when the last full one
# is older than DRIFT_FULL_SCAN_INTERVAL_HOURS; with DRIFT_AUTO_REPAIR the scan writes the cloud's values over what
# it finds (off by default: a person looks first, on the drift page).
DRIFT_SCAN_INTERVAL_MINUTES = env.int("DRIFT_SCAN_INTERVAL_MINUTES", default=60)
DRIFT_FULL_SCAN_INTERVAL_HOURS = env.int("DRIFT_FULL_SCAN_INTERVAL_HOURS", default=24)
DRIFT_AUTO_REPAIR = env.bool("DRIFT_AUTO_REPAIR", default=False)

# Decommission readiness (soa/views_readiness.py, writeback/jobs/readiness.py). The tenant is measured every
# READINESS_SNAPSHOT_INTERVAL_MINUTES (0: off) into the day's snapshot (the trend keeps each day's last); users are
# shown it while younger than READINESS_SNAPSHOT_MAX_AGE_MINUTES (0: never; OU-scoped users summed from its per-OU
# groups), else a measurement of their scope, reused for READINESS_CACHE_SECONDS (0: measured at every view).
READINESS_CACHE_SECONDS = env.int("READINESS_CACHE_SECONDS", default=300)
READINESS_SNAPSHOT_INTERVAL_MINUTES = env.int("READINESS_SNAPSHOT_INTERVAL_MINUTES", default=15)
READINESS_SNAPSHOT_MAX_AGE_MINUTES = env.int("READINESS_SNAPSHOT_MAX_AGE_MINUTES", default=60)
# The readiness page's prerequisites (soa/prerequisites.py, writeback/jobs/prerequisites.py, docs/readiness.md).
# Entra Connect's baseline build (exchange-facts §1.3: 2.5.76.0 at preview; 2026 sources cite 2.5.190.0, unconfirmed);
# how old Graph's onPremisesLastSyncDateTime may be (Connect's default cycle is 30 minutes, §6); how often the periodic
# job repeats the canary's no-op flip (0: only when an administrator asks); how many cloud-managed mailboxes the
# writeback check reads in AD, and how long after a cloud change it expects Cloud Sync (every 20 minutes, §2.4) to
# have written it.
ENTRA_CONNECT_MIN_VERSION = env.str("ENTRA_CONNECT_MIN_VERSION", default="2.5.76.0")
ENTRA_CONNECT_SYNC_MAX_AGE_HOURS = env.float("ENTRA_CONNECT_SYNC_MAX_AGE_HOURS", default=3.0)
PREREQUISITE_ROLE_CHECK_HOURS = env.int("PREREQUISITE_ROLE_CHECK_HOURS", default=24)
PREREQUISITE_WRITEBACK_SAMPLE = env.int("PREREQUISITE_WRITEBACK_SAMPLE", default=200)
PREREQUISITE_WRITEBACK_SETTLE_MINUTES = env.int("PREREQUISITE_WRITEBACK_SETTLE_MINUTES", default=60)

# The tenant default (exchange-facts §1.9; soa/views_tenant_default.py). Get-OrganizationConfig's property that shows
# it: BlockExchangeProvisioningFromOnPremEnabled is reported by one third party only (§1.4), so it is a setting. The
# read is reused for TENANT_DEFAULT_CACHE_SECONDS; a recipient created in AD within TENANT_DEFAULT_RECENT_CREATION_DAYS
# (0: not checked) blocks switching it on, as Microsoft says not to while recipients are still created on-premises.
EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY = env.str(
    "EXCHANGE_CLOUD_MANAGED_DEFAULT_PROPERTY", default="BlockExchangeProvisioningFromOnPremEnabled"
)
TENANT_DEFAULT_CACHE_SECONDS = env.int("TENANT_DEFAULT_CACHE_SECONDS", default=60)
TENANT_DEFAULT_RECENT_CREATION_DAYS = env.int("TENANT_DEFAULT_RECENT_CREATION_DAYS", default=30)

# Pilot waves. The quiet period is one 30-minute sync cycle plus 24 hours (Microsoft's advice before a flip);
# the ceiling is Microsoft's writeback limit at GA on 2026-08-03 (exchange-facts §1.10: 600,000; 200,000 in preview).
WAVE_APPROVAL_DAYS = env.int("WAVE_APPROVAL_DAYS", default=7)
WAVE_QUIET_PERIOD_HOURS = env.float("WAVE_QUIET_PERIOD_HOURS", default=24.5)
WAVE_CLOUD_MANAGED_CEILING = env.int("WAVE_CLOUD_MANAGED_CEILING", default=600000)
WAVE_CLOUD_MANAGED_WARN_RATIO = env.float("WAVE_CLOUD_MANAGED_WARN_RATIO", default=0.9)
WAVE_MIN_APPROVALS = env.int("WAVE_MIN_APPROVALS", default=1)
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://localhost:8000")

# Help-desk edits (soa.services.changes, soa.validation). The operations that wait for an approver (names of
# soa.choices.ChangeOperation); whether a reason is required; how long a removed address stays unusable by another
# mailbox; how long the cached Get-AcceptedDomain list is trusted (it is read again every half of that). With
# CHANGE_APPLY_ENABLED off, ready requests wait instead of being applied (writeback.jobs.changes), and nothing is lost.
CHANGE_APPROVAL_OPERATIONS = env.list("CHANGE_APPROVAL_OPERATIONS", default=["make_primary"])
CHANGE_APPROVAL_DAYS = env.int("CHANGE_APPROVAL_DAYS", default=7)
CHANGE_REASON_REQUIRED = env.bool("CHANGE_REASON_REQUIRED", default=True)
CHANGE_APPLY_ENABLED = env.bool("CHANGE_APPLY_ENABLED", default=True)
ADDRESS_COOLDOWN_HOURS = env.float("ADDRESS_COOLDOWN_HOURS", default=720.0)
ACCEPTED_DOMAINS_TTL_SECONDS = env.int("ACCEPTED_DOMAINS_TTL_SECONDS", default=3600)

# Bulk edits (soa.bulk_csv, soa.services.change_batches): the largest file and the most lines one upload may hold,
# how many change requests a batch's job creates per second, and how many it creates in one step before it queues
# the next (so the apply jobs of the requests it made run in between).
BULK_CHANGE_MAX_BYTES = env.int("BULK_CHANGE_MAX_BYTES", default=1024 * 1024)
BULK_CHANGE_MAX_LINES = env.int("BULK_CHANGE_MAX_LINES", default=5000)
BULK_CHANGE_RATE = env.float("BULK_CHANGE_RATE", default=20.0)
BULK_CHANGE_STEP = env.int("BULK_CHANGE_STEP", default=200)

# Bounded input. A wave's member list (pasted or uploaded CSV) is refused past this many bytes or lines before any
# lock is taken. Django's own request limits: a urlencoded or multipart body's fields (the pasted list, the bulk
# confirmation carrying its file back, percent-encoded up to three times its size) may not pass
# DATA_UPLOAD_MAX_MEMORY_SIZE, which is kept large enough for both CSV limits; an uploaded file larger than
# FILE_UPLOAD_MAX_MEMORY_SIZE is spooled to a temporary file instead of memory, and read line by line.
WAVE_CSV_MAX_BYTES = env.int("WAVE_CSV_MAX_BYTES", default=1024 * 1024)
WAVE_CSV_MAX_LINES = env.int("WAVE_CSV_MAX_LINES", default=10_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(
    env.int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440),
    3 * max(WAVE_CSV_MAX_BYTES, BULK_CHANGE_MAX_BYTES) + 64 * 1024,
)
FILE_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_FILE_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)

# The audit chain (portal/audit_chain.py, portal/audit_head.py; docs/operations.md, Audit log). AUDIT_CHAIN_KEY (or
# AUDIT_CHAIN_KEY_FILE) keys every event's hash and must be kept outside the database; without it a debug run uses a
# key generated into var/, and with debug off nothing can be recorded (check portal.E001 under --deploy). The chain's
# head is published every AUDIT_HEAD_INTERVAL_MINUTES (0: only by audit_verify) to AUDIT_HEAD_FILE (appended, one
# JSON line each; empty: none) and/or AUDIT_HEAD_SYSLOG ("/dev/log", or "host:port" over UDP; empty: none).
AUDIT_CHAIN_KEY = env.str("AUDIT_CHAIN_KEY", default="")
AUDIT_CHAIN_DEV_KEY_FILE = str(BASE_DIR / "var" / "audit-chain.key") if DEBUG else ""
AUDIT_HEAD_FILE = env.str("AUDIT_HEAD_FILE", default=str(BASE_DIR / "var" / "audit-heads.jsonl"))
AUDIT_HEAD_SYSLOG = env.str("AUDIT_HEAD_SYSLOG", default="")
AUDIT_HEAD_INTERVAL_MINUTES = env.int("AUDIT_HEAD_INTERVAL_MINUTES", default=15)

# Health checks answer quickly even when a component hangs.
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", default=2.0)
# /healthz reuses its component checks for this long (0: checks on every call), so frequent polling stays cheap.
HEALTH_CACHE_SECONDS = env.float("HEALTH_CACHE_SECONDS", default=5.0)

EMAIL_BACKEND = env.str("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="soa-portal@localhost")

LOG_FORMAT = env.str("LOG_FORMAT", default="text")  # "text" or "json"
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "portal.correlation.CorrelationIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(correlation_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
