# nowplaying-bot: the bot, the OAuth callback web server and the auto-poster, in one process.
# Build: docker build -t nowplaying-bot .    Run: docker compose up -d (see compose.yaml)
# BASE: any Debian-based image with python3 (3.11+) and its venv module. CI passes one built
# from Debian's packages (scripts/docker-smoke) where no image registry is reachable.
ARG BASE=python:3.11-slim

# --- builder: install the project into a virtual environment, as the README does -----------
FROM ${BASE} AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python3 -m venv /opt/venv

# Only what `pip install .` needs; .dockerignore keeps secrets and caches out of the context.
# constraints.txt pins every dependency (scripts/lock refreshes it): the same build each time.
COPY constraints.txt pyproject.toml README.md ./
COPY bot/ bot/
COPY cogs/ cogs/
RUN /opt/venv/bin/pip install --quiet --constraint constraints.txt .

# --- runtime: the venv, a non-root user, a volume for the database ---------------------------
FROM ${BASE}

# The image decides where the database and the settings live (the volume) and where the web
# server listens; .env.example leaves these commented so a copied .env cannot move them.
# Hints name the commands run on the host: `docker compose run --rm bot check`.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}" \
    DATABASE_PATH=/data/bot.db \
    WEB_HOST=0.0.0.0 \
    NOWPLAYING_ENV_FILE=/data/.env \
    NOWPLAYING_COMMAND="docker compose run --rm bot"

# /app stays root's: only /data is writable, so a database path outside the volume fails at
# start with one line instead of keeping the database in the container, lost with it.
RUN groupadd --system --gid 10001 bot \
    && useradd --system --no-log-init --uid 10001 --gid bot \
        --home-dir /app --shell /usr/sbin/nologin bot \
    && mkdir -p /app /data \
    && chown bot:bot /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Ownership is set above, before VOLUME: a new named volume starts as a copy of /data. A bind
# mount keeps the host folder's owner instead: chown it to 10001:10001 (see README, Docker).
VOLUME ["/data"]
USER 10001:10001

# Inside the container the web server listens on every interface (WEB_HOST above); what the
# host exposes is decided where the port is published (compose: 127.0.0.1:8080 by default).
EXPOSE 8080

# Asks /healthz where a published port arrives: the container's own address, not loopback,
# so a WEB_HOST=127.0.0.1 that the published port cannot reach is unhealthy. Exit 1 on an
# error or a non-2xx status (503 without the database). WEB_PORT is read as the bot reads it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, socket, urllib.request; host = socket.gethostbyname(socket.gethostname()); urllib.request.urlopen(f\"http://{host}:{os.environ.get('WEB_PORT') or 8080}/healthz\", timeout=4)"]

ENTRYPOINT ["nowplaying-bot"]
CMD []
