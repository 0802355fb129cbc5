"""The container files as a self-hoster uses them: compose.yaml alone (SQLite), compose.yaml
with compose.postgres.yaml (PostgreSQL, two processes), a .env copied from .env.example.
Read as data here; `.ci/run` builds the image, runs it and asks `docker compose config`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli.dotenv import read_env_file

ROOT = Path(__file__).resolve().parents[1]


class _ComposeLoader(yaml.SafeLoader):
    """Compose's YAML: `!reset` empties what the file below it set."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset", None))


def compose(name: str) -> dict[str, Any]:
    loaded = yaml.load((ROOT / name).read_text(encoding="utf-8"), Loader=_ComposeLoader)
    assert isinstance(loaded, dict)
    return loaded


def merged_services(*names: str) -> dict[str, dict[str, Any]]:
    """Services as `docker compose -f A -f B` sees them, for the keys these files use:
    mappings merge, `!reset` empties, ports and volumes add up, anything else is replaced."""
    services: dict[str, dict[str, Any]] = {}
    for name in names:
        for service, config in compose(name)["services"].items():
            target = services.setdefault(service, {})
            for key, value in config.items():
                if value == ("!reset", None):
                    target[key] = []
                elif isinstance(value, dict) and isinstance(target.get(key), dict):
                    target[key] = {**target[key], **value}
                elif key in ("ports", "volumes") and key in target:
                    target[key] = [*target[key], *value]
                else:
                    target[key] = value
    return services


def bot_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the bot: built here, or the image built here."""
    return {
        name: service
        for name, service in services.items()
        if "build" in service or service.get("image") == "nowplaying-bot"
    }


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    runtime = text.rsplit("\nFROM ", 1)[1]
    [env_line] = [line for line in runtime.splitlines() if line.startswith("ENV ")]
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', env_line))


def test_a_plain_up_starts_the_sqlite_bot_with_its_volume() -> None:
    services = merged_services("compose.yaml")
    assert list(bot_services(services)) == ["bot"]
    bot = services["bot"]
    assert "profiles" not in bot
    assert "botdata:/data" in bot["volumes"]
    assert "DATABASE_URL" not in bot.get("environment", {})
    assert bot["ports"] == ["127.0.0.1:8080:8080"]


def test_the_postgresql_setup_starts_no_sqlite_bot() -> None:
    """Issue 21 item 5: with the profile, the SQLite bot started too, logged in with the same
    token and published the proxy's port."""
    services = merged_services("compose.yaml", "compose.postgres.yaml")
    bots = bot_services(services)
    assert sorted(bots) == ["bot", "bot-shard1"]
    for name, bot in bots.items():
        assert bot["environment"]["DATABASE_URL"].startswith("postgresql://nowplaying:"), name
        assert bot["environment"]["SHARD_COUNT"] == "2"
        assert not bot.get("ports"), name  # the proxy publishes the web port
    assert {bot["environment"]["SHARD_IDS"] for bot in bots.values()} == {"0", "1"}
    assert not any("profiles" in service for service in services.values())
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published == ["127.0.0.1:8080:8080"]  # the proxy's, on loopback only


def test_every_bot_process_reads_the_settings_setup_wrote() -> None:
    """Issue 21 item 1: the shards had an empty /data, so no /data/.env: exit 2, restarts."""
    for files in (("compose.yaml",), ("compose.yaml", "compose.postgres.yaml")):
        bots = bot_services(merged_services(*files))
        assert bots, files
        for name, bot in bots.items():
            assert "botdata:/data" in bot["volumes"], (files, name)
            assert bot["env_file"] == [{"path": ".env", "required": False}], (files, name)


def test_one_image_is_built_for_every_service() -> None:
    services = merged_services("compose.yaml", "compose.postgres.yaml")
    assert [name for name, service in services.items() if "build" in service] == ["bot"]


def test_the_postgres_password_comes_from_the_env_file_or_nothing_starts() -> None:
    text = (ROOT / "compose.postgres.yaml").read_text(encoding="utf-8")
    assert "${POSTGRES_PASSWORD:-}" not in text  # never an empty password
    assert text.count("${POSTGRES_PASSWORD:?") == 2


def test_a_copied_env_example_overrides_nothing_the_image_decides() -> None:
    """Issue 21 item 4: WEB_HOST=127.0.0.1 and DATABASE_PATH=data/bot.db from .env.example
    broke the published port and put the database outside the volume."""
    image = dockerfile_env()
    assert image["WEB_HOST"] == "0.0.0.0"
    assert image["DATABASE_PATH"] == "/data/bot.db"
    example = read_env_file(ROOT / ".env.example")
    assert [name for name in image if example.get(name)] == []
    # Optional settings are shown commented, at their defaults: a copy sets only what it asks.
    set_values = {name for name, value in example.items() if value}
    assert set_values == {"SPOTIFY_REDIRECT_URI"}


def test_the_health_check_asks_where_the_published_port_arrives() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    [check] = [line for line in text.splitlines() if line.strip().startswith('CMD ["python"')]
    assert "socket.gethostname()" in check
    assert "127.0.0.1" not in check


def test_the_base_image_is_a_build_argument() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert text.count("FROM ${BASE}") == 2
    assert "ARG BASE=python:3.11-slim" in text
    assert "# syntax=" not in text  # BuildKit would pull a frontend from Docker Hub for it


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    found = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False, timeout=30
    )
    return [docker, "compose"] if found.returncode == 0 else None


@pytest.mark.skipif(
    _docker_compose() is None,
    reason="Docker Compose v2 is not installed here (.ci/run installs it as root)",
)
@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "compose.postgres.yaml"]])
def test_docker_compose_accepts_the_files(files: list[str], tmp_path: Path) -> None:
    command = _docker_compose()
    assert command is not None
    arguments = [argument for name in files for argument in ("-f", str(ROOT / name))]
    env = {"PATH": "/usr/bin:/bin", "POSTGRES_PASSWORD": "for-the-test", "HOME": str(tmp_path)}
    if "DOCKER_CONFIG" in os.environ:  # where .ci/run put the Compose plugin
        env["DOCKER_CONFIG"] = os.environ["DOCKER_CONFIG"]
    done = subprocess.run(
        [*command, "--project-directory", str(ROOT), *arguments, "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
