# syntax=docker/dockerfile:1
# nowplaying-bot: the bot, the OAuth callback web server and the auto-poster, in one process.
# Build: docker build -t nowplaying-bot .    Run: docker compose up -d (see compose.yaml)

# --- builder: install the project into a virtual environment, as the README does -----------
FROM python:3.11-slim AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python -m venv /opt/venv

# Only what `pip install .` needs; .dockerignore keeps secrets and caches out of the context.
COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY cogs/ cogs/
RUN /opt/venv/bin/pip install .

# --- runtime: the venv, a non-root user, a volume for the database ---------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}" \
    DATABASE_PATH=/data/bot.db \
    WEB_HOST=0.0.0.0 \
    NOWPLAYING_ENV_FILE=/data/.env

RUN groupadd --system --gid 10001 bot \
    && useradd --system --no-log-init --uid 10001 --gid bot \
        --home-dir /app --shell /usr/sbin/nologin bot \
    && mkdir -p /app /data \
    && chown bot:bot /app /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Ownership is set above, before VOLUME: a new named volume starts as a copy of /data. A bind
# mount keeps the host folder's owner instead: chown it to 10001:10001 (see README, Docker).
VOLUME ["/data"]
USER 10001:10001

# Inside the container the web server listens on every interface (WEB_HOST above); what the
# host exposes is decided where the port is published (compose: 127.0.0.1:8080 by default).
EXPOSE 8080

# slim has no curl: ask /healthz with Python (exit 1 on an error or a non-2xx status).
# It answers 200 while the database is reachable; WEB_PORT is read as the bot reads it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('WEB_PORT') or '8080') + '/healthz', timeout=4)"]

ENTRYPOINT ["nowplaying-bot"]
CMD []
