"""Metronome settings, read from the environment (and an optional ``.env`` file).

Every setting a deployment may change is an environment variable listed in README's
configuration table. Defaults are for local development; production sets ``DEBUG=False``
and must then provide a ``SECRET_KEY``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from integrations.base.discovery import integration_apps, integration_roots
from scheduler import job_middleware

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG: bool = env.bool("DEBUG", default=True)

_DEV_SECRET_KEY = "metronome-insecure-development-key-do-not-use-in-production"
SECRET_KEY: str = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG is False. Set SECRET_KEY to a long random "
            "string (for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`), "
            "or set DEBUG=True for local development."
        )
    SECRET_KEY = _DEV_SECRET_KEY

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS in production (docs/operations.md, "Production settings"). Off by default so that
# `./run.sh` and docker compose work over plain http; `manage.py check --deploy` names each
# one that production still lacks.


def _proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """``HTTP_X_FORWARDED_PROTO,https`` -> Django's (META name, value) pair; empty -> None."""
    if not value.strip():
        return None
    parts = [part.strip() for part in value.split(",")]
    if len(parts) != 2 or not all(parts) or not parts[0].startswith("HTTP_"):
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={value!r} is not 'HEADER,VALUE'. Set it to the header "
            "your proxy sets on HTTPS requests, as Django names it, and its value, e.g. "
            "SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https (and only behind a proxy "
            "that overwrites that header)."
        )
    return parts[0], parts[1]


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header(env.str("SECURE_PROXY_SSL_HEADER", default=""))
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE: bool = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE: bool = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF: bool = env.bool("SECURE_CONTENT_TYPE_NOSNIFF", default=True)
# Load balancers and the compose health check probe /healthz over plain http; it shows no
# tenant data. Everything else, /metrics and its token included, is redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Error pages (DEBUG) and error e-mails hide passwords in URLs, keys and tokens, in settings,
# the environment and frame variables alike; see config/errors.py.
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.errors.MetronomeExceptionReporterFilter"

# Packages whose sub-packages are integration types, besides integrations/ (a comma list of
# importable packages, e.g. INTEGRATION_PACKAGES=acme_integrations). See docs/integrations.md.
INTEGRATION_PACKAGES: list[str] = env.list("INTEGRATION_PACKAGES", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # procrastinate must come before our apps: they register tasks on its app.
    "procrastinate.contrib.django",
    "tenants",
    "integrations",
    # Every integration type is an app of its own (integrations/github, ...): found by
    # scanning the folders, so adding one needs no change here.
    *integration_apps(integration_roots(INTEGRATION_PACKAGES)),
    "scheduler",
    "audit",
    "monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files under gunicorn (docker-compose); no CDN, no nginx needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "audit.middleware.AuditUserMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database_url() -> str:
    """DATABASE_URL, else the URL of the embedded cluster that ``run.sh`` started."""
    url = env.str("DATABASE_URL", default="")
    if url:
        return url
    state_dir = env.path("METRONOME_PG_DIR", default=BASE_DIR / ".local" / "pg")
    url_file = Path(state_dir) / "database_url"
    if url_file.is_file():
        return url_file.read_text().strip()
    raise ImproperlyConfigured(
        "DATABASE_URL is not set and no embedded PostgreSQL has been created yet. "
        "Run `./run.sh` (or `./run.sh db-start`) once to create the embedded database, "
        "or set DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/NAME."
    )


DATABASES = {"default": env.db_url_config(_database_url())}
# Persistent connections: a worker would otherwise reconnect for every job (~10 ms here).
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=300))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 10)
# Lets two test runs share one server (each gets its own test database).
if env.str("TEST_DATABASE_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE: str = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "job_context": {"()": "scheduler.logcontext.JobContextFilter"},
        "reported_failures": {"()": "scheduler.logcontext.ReportedFailureFilter"},
        "periodic_registration": {"()": "scheduler.logcontext.PeriodicRegistrationFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)-7s %(name)s [%(job_context)s]: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["job_context"],
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "procrastinate": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Says "Adding tasks from blueprint" at every start: noise, not news.
        "procrastinate.blueprints": {"level": "WARNING"},
        # A failed attempt the run middleware logged in one line is not logged again with a
        # traceback; each periodic task's "Registering task" line comes once per process.
        # See scheduler/logcontext.py.
        "procrastinate.worker": {"filters": ["reported_failures"]},
        "procrastinate.periodic": {"filters": ["periodic_registration"]},
        "metronome": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "tenants": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "integrations": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "scheduler": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}

# procrastinate: tasks are autodiscovered from every app's ``tasks.py``.
PROCRASTINATE_AUTODISCOVER_MODULE_NAME = "tasks"
# The scheduler job's period in seconds; see scheduler/tasks.py.
SCHEDULER_PERIOD: int = env.int("SCHEDULER_PERIOD", default=60)
# How long the record of each scheduler tick is kept (admin and health checks read it).
SCHEDULER_TICK_RETENTION_DAYS: int = env.int("SCHEDULER_TICK_RETENTION_DAYS", default=7)
# /healthz fails when no worker serving queue "scheduler" sent a heartbeat (every 10 s)
# for this many seconds: a frozen scheduler shows within half a minute.
SCHEDULER_HEARTBEAT_MAX_AGE: int = env.int("SCHEDULER_HEARTBEAT_MAX_AGE", default=25)
# A running job whose worker sent no heartbeat for this long is retried by the maintenance job.
STALLED_JOB_SECONDS: int = env.int("STALLED_JOB_SECONDS", default=60)
# Finished jobs (succeeded, failed, cancelled) are deleted after this many hours; TaskRun
# rows keep their history.
JOB_RETENTION_HOURS: int = env.int("JOB_RETENTION_HOURS", default=168)


def _whole_number(name: str, default: int) -> int:
    """An integer environment variable, or a start-up error naming it (ranges are checked
    by the system checks of scheduler/retention.py and audit/retention.py)."""
    raw = env.str(name, default=str(default)).strip()
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a whole number; set it to an integer such as "
            f"{name}={default} (the default), or remove it."
        ) from None


# Bounded history (docs/operations.md, "Retention"): the maintenance job deletes finished
# TaskRuns and audit entries older than these many days (0 keeps them forever), at most
# RETENTION_BATCH_SIZE rows per statement and for RETENTION_BUDGET_SECONDS per run.
TASKRUN_RETENTION_DAYS: int = _whole_number("TASKRUN_RETENTION_DAYS", 90)
AUDIT_RETENTION_DAYS: int = _whole_number("AUDIT_RETENTION_DAYS", 365)
RETENTION_BATCH_SIZE: int = _whole_number("RETENTION_BATCH_SIZE", 2000)
RETENTION_BUDGET_SECONDS: int = _whole_number("RETENTION_BUDGET_SECONDS", 10)
#: Due Tasks a tick plans and commits at a time: a herd's first jobs start after one chunk
#: (range checked by scheduler.E005).
SCHEDULER_CHUNK_SIZE: int = _whole_number("SCHEDULER_CHUNK_SIZE", 1000)
#: Threads (each with a database connection) that take a herd's chunks in one scheduler
#: worker, once the first chunk was full (range checked by scheduler.E006).
SCHEDULER_TICK_THREADS: int = _whole_number("SCHEDULER_TICK_THREADS", 2)
# Every worker's task middleware: keeps TaskRun rows in step with their jobs.
PROCRASTINATE_WORKER_DEFAULTS = {"task_middleware": [job_middleware.record_run]}
# What procrastinate has no setting for (see scheduler/procrastinate_internals.py).
PROCRASTINATE_ON_APP_READY = "scheduler.hooks.on_app_ready"

# ---------------------------------------------------------------------------------------
# Secrets at rest and monitoring. See tenants/crypto.py and monitoring/metrics.py.
# ---------------------------------------------------------------------------------------
# Fernet keys that encrypt Locker values: a comma list, the current key first, older keys
# after it until `manage.py rotate_locker_keys` has re-encrypted everything. Generate one with
# python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
LOCKER_KEYS: list[str] = env.list("LOCKER_KEYS", default=[])
# Without LOCKER_KEYS, a key derived from SECRET_KEY is used, for local development only, and
# only if DEBUG is on at start-up (decided here, once: pytest-django turns DEBUG off while
# tests run). With DEBUG off and no LOCKER_KEYS, every use of the Locker fails with a message.
LOCKER_DEVELOPMENT_KEY: bool = DEBUG and not LOCKER_KEYS
# Who may read /metrics when DEBUG is off: with METRICS_TOKEN set, a request bearing it
# (`Authorization: Bearer <token>`); without it, clients whose address (REMOTE_ADDR, never
# X-Forwarded-For) is in METRICS_ALLOWED_IPS, a comma list of IPs and CIDR networks, loopback
# only by default. Behind a proxy, REMOTE_ADDR is the proxy: list it, or set a token.
# /healthz is always open and shows no tenant data.
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS: list[str] = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.0/8", "::1"])
for _network in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_network.strip(), strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_IPS entry {_network!r} is not an IP address or CIDR network; "
            "use a comma list such as METRICS_ALLOWED_IPS=127.0.0.0/8,::1,10.0.0.5"
        ) from None
# Hosts integrations may reach besides their type's own (api.github.com for github): a comma
# list of `host` (port 443) or `host:port`, e.g. a GitHub Enterprise server. A listed
# host:port may resolve to a private address; nothing else may. See integrations/base/egress.py.
INTEGRATION_ALLOWED_HOSTS: list[str] = env.list("INTEGRATION_ALLOWED_HOSTS", default=[])
