"""MeetingDash settings: one module, every knob read from the environment.

Defaults are safe for production: DEBUG off (so DJANGO_SECRET_KEY is required), no built-in
simulator unless MEETINGDASH_SIMULATOR=1. Everything else works out of the box on one machine:
SQLite, the in-memory channel layer and cache. `make demo` and the tests turn DEBUG on.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default)
    if value in ("1", "True", "true", "yes", "on"):
        return True
    if value in ("0", "False", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def envint(name: str, default: str) -> int:
    value = os.getenv(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def envfloat(name: str, default: str) -> float:
    value = os.getenv(name, default)
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None


def envlist(name: str, default: str = "") -> list[str]:
    return [item for item in os.getenv(name, default).replace(",", " ").split() if item]


DEBUG = envbool("DJANGO_DEBUG", "0")

# Public (it is in this file), so only ever accepted with DEBUG on: with it, anyone could forge
# sessions, CSRF tokens and widget links.
DEV_SECRET_KEY = "django-insecure-meetingdash-development-only"
SECRET_KEY = os.getenv("DJANGO_SECRET_KEY", "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set to a secret value when DJANGO_DEBUG=0 "
        "(DJANGO_DEBUG=1 is for development only)."
    )
SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY

ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "localhost 127.0.0.1 [::1]")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "sessions_monitor",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "sessions_monitor.security.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "meetingdash.urls"
ASGI_APPLICATION = "meetingdash.asgi.application"

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
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", "0"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the relay write while pages read; the busy timeout absorbs short write locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.getenv("REDIS_URL", "")


if REDIS_URL:
    from sessions_monitor.redis_client import channel_layer_hosts

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": channel_layer_hosts(REDIS_URL),
                "capacity": 1000,
                "expiry": 60,
                "prefix": os.getenv("MEETINGDASH_CHANNEL_PREFIX", "meetingdash"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
    }

# The cache holds rate-limit counters (logins, upstream look-ups) and the negative look-up
# cache: shared by every process through Redis in scaled mode, per process otherwise.
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.getenv("MEETINGDASH_CHANNEL_PREFIX", "meetingdash"),
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
# Failed logins are counted per username and per client address (sessions_monitor.limits);
# the login forms (dashboard and admin) refuse further tries while either is over its limit.
MEETINGDASH_LOGIN_FAILURES_PER_USERNAME = envint("MEETINGDASH_LOGIN_FAILURES_PER_USERNAME", "5")
MEETINGDASH_LOGIN_FAILURES_PER_IP = envint("MEETINGDASH_LOGIN_FAILURES_PER_IP", "30")
MEETINGDASH_LOGIN_LOCKOUT_SECONDS = envint("MEETINGDASH_LOGIN_LOCKOUT_SECONDS", "900")
LOGIN_REDIRECT_URL = "session-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# Times to the second with their zone everywhere (the admin included): meetingdash/formats.
FORMAT_MODULE_PATH = ["meetingdash.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Behind a reverse proxy: take the client address and scheme from X-Forwarded-For and
# X-Forwarded-Proto. Only when the proxy sets (and overwrites) them: see README "Security".
MEETINGDASH_PROXY_HEADERS = envbool("MEETINGDASH_PROXY_HEADERS", "0")
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", "1")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("DJANGO_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    # /healthz is probed over plain HTTP by load balancers and process managers.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if MEETINGDASH_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.getenv("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}

# --- MeetingDash -------------------------------------------------------------------------
MEETINGBUDDY_API_URL = os.getenv("MEETINGBUDDY_API_URL", "").rstrip("/")
MEETINGBUDDY_API_TOKEN = os.getenv("MEETINGBUDDY_API_TOKEN", "")
MEETINGDASH_DISCOVERY_SECONDS = envfloat("MEETINGDASH_DISCOVERY_SECONDS", "10")
MEETINGDASH_KEEPALIVE_SECONDS = envfloat("MEETINGDASH_KEEPALIVE_SECONDS", "15")
# The upstream writes a keepalive every 15 s: 35 s is two missed keepalives plus slack for
# a slow network, and bounds how long a silent stall can hide events (a gap marks it).
MEETINGDASH_UPSTREAM_STALL_SECONDS = envfloat("MEETINGDASH_UPSTREAM_STALL_SECONDS", "35")
# Relay: how often it re-reads watched sessions (resume, take-over), and (scaled mode) how
# long a relay's per-session Redis lease lives without renewal.
MEETINGDASH_RELAY_RESCAN_SECONDS = envfloat("MEETINGDASH_RELAY_RESCAN_SECONDS", "5")
MEETINGDASH_RELAY_LEASE_SECONDS = envfloat("MEETINGDASH_RELAY_LEASE_SECONDS", "15")
# How often the relay streaming a session polls its transcript (`GET …/transcripts`).
MEETINGDASH_TRANSCRIPT_POLL_SECONDS = envfloat("MEETINGDASH_TRANSCRIPT_POLL_SECONDS", "5")
# `runrelay` serves its own /metrics here when set (no authentication: keep it internal).
MEETINGDASH_RELAY_METRICS_PORT = envint("MEETINGDASH_RELAY_METRICS_PORT", "0")
MEETINGDASH_RELAY_METRICS_HOST = os.getenv("MEETINGDASH_RELAY_METRICS_HOST", "127.0.0.1")
MEETINGDASH_EMBED_ORIGINS = envlist("MEETINGDASH_EMBED_ORIGINS")
# How long the Live view keeps a session that ended or failed in its "Recently ended" strip.
MEETINGDASH_RECENT_MINUTES = envint("MEETINGDASH_RECENT_MINUTES", "30")
MEETINGDASH_EMBED_TOKEN_DAYS = envint("MEETINGDASH_EMBED_TOKEN_DAYS", "30")
# Our own public base URL, for links printed outside a request (`embed_token`).
MEETINGDASH_PUBLIC_URL = os.getenv("MEETINGDASH_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
MEETINGDASH_METRICS_TOKEN = os.getenv("MEETINGDASH_METRICS_TOKEN", "")
# The built-in simulator runs inside `serve` only when asked for (`make demo` does); with
# DEBUG off it then also needs MEETINGDASH_SIMULATOR_TOKEN (`check --deploy` flags it anyway).
MEETINGDASH_SIMULATOR = envbool("MEETINGDASH_SIMULATOR", "0")
MEETINGDASH_SIMULATOR_TOKEN = os.getenv("MEETINGDASH_SIMULATOR_TOKEN", "")
MEETINGDASH_SIMULATOR_PREFIX = "/_simulator"

# --- alerts (sessions_monitor.alerts) -------------------------------------------------------
# How often the relay's watchdog looks for stuck sessions and a down upstream, and sends
# what is due in the outbox.
MEETINGDASH_ALERT_CHECK_SECONDS = envfloat("MEETINGDASH_ALERT_CHECK_SECONDS", "5")
# The first retry of a failed delivery waits this long, each next one twice as long (capped
# at an hour); after MEETINGDASH_ALERT_MAX_ATTEMPTS the delivery is given up (and logged).
MEETINGDASH_ALERT_RETRY_SECONDS = envfloat("MEETINGDASH_ALERT_RETRY_SECONDS", "10")
MEETINGDASH_ALERT_MAX_ATTEMPTS = envint("MEETINGDASH_ALERT_MAX_ATTEMPTS", "12")
# A relay's claim on the deliveries it sends: a relay that dies holding some leaves them to
# the others after this long (the same alert, with the same webhook-id: at least once).
MEETINGDASH_ALERT_CLAIM_SECONDS = envfloat("MEETINGDASH_ALERT_CLAIM_SECONDS", "60")
# `make demo` only: a built-in webhook receiver at /_demo/alerts/ and two demo rules posting to
# it (`ensure_demo_user`), so a newcomer sees alerts arrive. Off by default.
MEETINGDASH_DEMO_ALERTS = envbool("MEETINGDASH_DEMO_ALERTS", "0")
# Followers' toasts and the dashboard's "stuck" badge: a session is stuck after this long in
# one of these statuses ("status=seconds" pairs, space separated). Alert rules set their own.
MEETINGDASH_STUCK_AFTER = {
    status: float(seconds)
    for status, _, seconds in (
        pair.partition("=")
        for pair in envlist(
            "MEETINGDASH_STUCK_AFTER", "initializing=180 joining=180 waiting=600 leaving=120"
        )
    )
}
# Email alerts go through Django's SMTP settings.
EMAIL_HOST = os.getenv("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = envint("DJANGO_EMAIL_PORT", "25")
EMAIL_HOST_USER = os.getenv("DJANGO_EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.getenv("DJANGO_EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("DJANGO_EMAIL_USE_TLS", "0")
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = os.getenv("DJANGO_DEFAULT_FROM_EMAIL", "MeetingDash <meetingdash@localhost>")

# --- limits on what one client can cost (sessions_monitor.limits) -------------------------
MEETINGDASH_MAX_STREAMS_PER_TOKEN = envint("MEETINGDASH_MAX_STREAMS_PER_TOKEN", "20")
# What `serve` buffers for one client that does not read, and how long it may not read.
MEETINGDASH_SEND_BUFFER_BYTES = envint("MEETINGDASH_SEND_BUFFER_BYTES", str(256 * 1024))
MEETINGDASH_STALLED_CLIENT_SECONDS = envfloat("MEETINGDASH_STALLED_CLIENT_SECONDS", "30")
# The listen backlog: after a restart every open page and stream reconnects at once; Twisted's
# default (50) refuses most of them (the kernel caps it at net.core.somaxconn).
MEETINGDASH_LISTEN_BACKLOG = envint("MEETINGDASH_LISTEN_BACKLOG", "4096")
# SO_SNDBUF of each connection `serve` accepts; 0 leaves the kernel's autotuning.
MEETINGDASH_SOCKET_SEND_BUFFER_BYTES = envint("MEETINGDASH_SOCKET_SEND_BUFFER_BYTES", "0")
MEETINGDASH_MAX_STREAMS_PER_USER = envint("MEETINGDASH_MAX_STREAMS_PER_USER", "20")
MEETINGDASH_MAX_PAGES_PER_USER = envint("MEETINGDASH_MAX_PAGES_PER_USER", "50")
MEETINGDASH_MAX_WIDGETS_PER_TOKEN = envint("MEETINGDASH_MAX_WIDGETS_PER_TOKEN", "100")
# Upstream look-ups of session ids we do not know yet, per credential, and how long an id the
# upstream does not know is remembered as unknown.
MEETINGDASH_LOOKUPS_PER_MINUTE = envint("MEETINGDASH_LOOKUPS_PER_MINUTE", "10")
MEETINGDASH_LOOKUP_CACHE_SECONDS = envint("MEETINGDASH_LOOKUP_CACHE_SECONDS", "60")
# A client must send its request headers within this many seconds (slow-loris); daphne's
# own idle timeout (60 s) only starts over on every byte.
MEETINGDASH_HEADER_TIMEOUT_SECONDS = envfloat("MEETINGDASH_HEADER_TIMEOUT_SECONDS", "10")
