"""The command line through the installed console script and ``python -m bot``: hints name the
command that was run, ``--version``, ``--help``, ``--env-file`` and ``NOWPLAYING_ENV_FILE``."""

from __future__ import annotations

import base64
import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

import pytest

from bot.cli.invocation import command_name, locate_env_file
from bot.crypto import TokenCipher
from bot.storage import Storage
from tests.clirun import (
    CONSOLE_SCRIPT,
    PROJECT_ROOT,
    PYTHON_M_BOT,
    env_for_fakes,
    run_command,
)
from tests.fakes.discord import FakeDiscord
from tests.fakes.spotify import FakeSpotify
from tests.harness import KEY
from tests.helpers import linked_account

pytestmark = pytest.mark.skipif(
    not CONSOLE_SCRIPT.exists(), reason="the console script is installed by `pip install`"
)
VENV_BIN = str(CONSOLE_SCRIPT.parent)
# A PATH without the venv: the script must be named by the path it was started with.
PATH_WITHOUT_VENV = os.pathsep.join(
    part for part in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if part != VENV_BIN
)


# --- the name to repeat in hints ------------------------------------------------------------


def test_console_script_found_on_path_is_named_by_its_name() -> None:
    assert command_name(str(CONSOLE_SCRIPT), [], path=VENV_BIN) == "nowplaying-bot"


def test_console_script_not_on_path_is_named_as_typed() -> None:
    typed = ".venv/bin/nowplaying-bot"
    assert command_name(typed, [], path="/nonexistent") == typed


def test_python_m_bot_repeats_the_interpreter_as_typed() -> None:
    main = str(Path(__file__).resolve().parents[2] / "bot" / "__main__.py")
    assert command_name(main, [".venv/bin/python", "-m", "bot", "check"]) == (
        ".venv/bin/python -m bot"
    )
    assert command_name(main, ["python3", "-m", "bot"]) == "python3 -m bot"


def test_env_file_option_wins_over_the_variable_and_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert locate_env_file(None, {}).path == tmp_path / ".env"
    assert locate_env_file(None, {}).describe() == f"{tmp_path / '.env'} (in the working directory)"
    chosen = locate_env_file(None, {"NOWPLAYING_ENV_FILE": "conf/np.env"})
    assert chosen.path == tmp_path / "conf" / "np.env"
    assert chosen.describe() == f"{tmp_path / 'conf' / 'np.env'} (named by NOWPLAYING_ENV_FILE)"
    assert locate_env_file("/etc/np.env", {"NOWPLAYING_ENV_FILE": "x"}).named_by == "--env-file"


# --- through the real console script and python -m bot ---------------------------------------


@pytest.mark.parametrize(
    ("command", "path", "expected"),
    [
        ((str(CONSOLE_SCRIPT),), PATH_WITHOUT_VENV, str(CONSOLE_SCRIPT)),
        (("nowplaying-bot",), f"{VENV_BIN}{os.pathsep}{PATH_WITHOUT_VENV}", "nowplaying-bot"),
        (PYTHON_M_BOT, PATH_WITHOUT_VENV, f"{sys.executable} -m bot"),
    ],
    ids=["script-by-path", "script-on-PATH", "python-m-bot"],
)
async def test_without_configuration_two_lines_name_the_command_that_was_run(
    tmp_path: Path, command: tuple[str, ...], path: str, expected: str
) -> None:
    status, output = await run_command(command, {"PATH": path}, tmp_path)
    assert status == 2
    lines = output.splitlines()
    assert len(lines) == 2, output
    assert lines[0] == (
        f"nowplaying-bot: not configured yet (no file at {tmp_path / '.env'} (in the working "
        "directory), and no DISCORD_TOKEN, SPOTIFY_* or TOKEN_ENCRYPTION_KEY in the environment)."
    )
    assert f"`{expected} setup`" in lines[1]
    assert f"then run `{expected}` again." in lines[1]
    assert "python -m bot" not in output.replace(f"{sys.executable} -m bot", "")


async def test_a_partial_env_file_says_which_file_was_read_and_what_to_run(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=abc\n")
    status, output = await run_command(
        (str(CONSOLE_SCRIPT),), {"PATH": PATH_WITHOUT_VENV}, tmp_path
    )
    assert status == 2
    assert "Traceback" not in output
    assert f"a key printed by `{CONSOLE_SCRIPT} gen-key`" in output
    assert (
        f"Settings were read from the environment and {tmp_path / '.env'} "
        "(in the working directory)." in output
    )
    assert f"Next: run `{CONSOLE_SCRIPT} setup` to write a .env" in output
    assert f"then `{CONSOLE_SCRIPT} check`." in output
    assert "DISCORD_TOKEN:" not in output  # the value it has is fine


async def test_version_through_both_entry_points(tmp_path: Path) -> None:
    expected = f"nowplaying-bot {importlib.metadata.version('nowplaying-bot')}"
    for command in ((str(CONSOLE_SCRIPT),), PYTHON_M_BOT):
        status, output = await run_command((*command, "--version"), {}, tmp_path)
        assert (status, output.strip()) == (0, expected)


async def test_help_says_where_configuration_comes_from(tmp_path: Path) -> None:
    status, output = await run_command(
        ("nowplaying-bot", "--help"),
        {"PATH": f"{VENV_BIN}{os.pathsep}{PATH_WITHOUT_VENV}"},
        tmp_path,
    )
    assert status == 0
    assert output.startswith("usage: nowplaying-bot ")
    flat = " ".join(output.split())
    assert "Settings come from the environment and from a .env file; the environment wins." in flat
    assert (
        "The .env file is the one named by --env-file, else by the NOWPLAYING_ENV_FILE "
        f"variable, else .env in the working directory (here: {tmp_path / '.env'})." in flat
    )
    assert "`nowplaying-bot setup` writes a .env for you" in flat
    for name in ("run", "check", "setup", "gen-key", "rotate-keys"):
        assert f"  {name} " in output


async def test_check_reads_the_env_file_named_on_the_command_line(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc" / "nowplaying.env"
    elsewhere.parent.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".env").write_text("DISCORD_TOKEN=the-wrong-file\n")
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        settings = env_for_fakes(tmp_path, discord, spotify)
        elsewhere.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
        status, output = await run_command(
            (str(CONSOLE_SCRIPT), "--env-file", str(elsewhere), "check"), {}, workdir
        )
    assert status == 0, output
    assert f"read from the environment and {elsewhere} (named by --env-file)" in output
    assert "Everything checked is usable." in output


async def test_nowplaying_env_file_names_the_file_for_a_service_without_a_workdir(
    tmp_path: Path,
) -> None:
    named = tmp_path / "np.env"
    named.write_text(f"TOKEN_ENCRYPTION_KEY={KEY}\n")
    status, output = await run_command(
        (str(CONSOLE_SCRIPT),), {"NOWPLAYING_ENV_FILE": str(named)}, Path("/")
    )
    assert status == 2
    assert f"{named} (named by NOWPLAYING_ENV_FILE)" in output
    assert "DISCORD_TOKEN: missing" in output
    assert "TOKEN_ENCRYPTION_KEY: missing" not in output  # the named file set it


async def test_an_env_file_named_on_the_command_line_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    for subcommand in ("check", "run", "rotate-keys"):
        status, output = await run_command(
            (str(CONSOLE_SCRIPT), "--env-file", str(missing), subcommand), {}, tmp_path
        )
        assert status == 2
        assert output.splitlines() == [
            f"nowplaying-bot: {missing} (named by --env-file) does not exist; run "
            f"`{CONSOLE_SCRIPT} --env-file {missing} setup` to create it."
        ]


async def test_an_env_file_variable_may_name_a_file_setup_has_not_written_yet(
    tmp_path: Path,
) -> None:
    """As the container image does: the values come from the environment meanwhile."""
    missing = tmp_path / "data" / ".env"
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        env = {**env_for_fakes(tmp_path, discord, spotify), "NOWPLAYING_ENV_FILE": str(missing)}
        status, output = await run_command((*PYTHON_M_BOT, "check"), env, tmp_path)
    assert status == 0, output
    assert f"No .env file was found at {missing} (named by NOWPLAYING_ENV_FILE)" in output
    status, output = await run_command(
        PYTHON_M_BOT, {"NOWPLAYING_ENV_FILE": str(missing)}, tmp_path
    )
    assert status == 2
    assert f"no file at {missing} (named by NOWPLAYING_ENV_FILE)" in output
    # No .env.example in this folder: the hint does not send the user looking for one here.
    assert f"or write {missing} with DISCORD_TOKEN, SPOTIFY_CLIENT_ID" in output
    assert "copy .env.example" not in output
    shutil.copy(PROJECT_ROOT / ".env.example", tmp_path / ".env.example")
    status, output = await run_command(
        PYTHON_M_BOT, {"NOWPLAYING_ENV_FILE": str(missing)}, tmp_path
    )
    assert status == 2
    assert f"copy .env.example to {missing} and fill it in" in output


async def test_setup_without_a_terminal_exits_2_and_says_what_to_do(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / ".env.example", tmp_path / ".env.example")
    status, output = await run_command((str(CONSOLE_SCRIPT), "setup"), {}, tmp_path)
    assert status == 2
    assert output.splitlines() == [
        "nowplaying-bot: setup asks for secrets and needs an interactive terminal.",
        f"Run `{CONSOLE_SCRIPT} setup` in a terminal, or copy .env.example to "
        f"{tmp_path / '.env'} and fill it in.",
    ]
    assert not (tmp_path / ".env").exists()


async def test_inside_the_container_hints_name_the_commands_run_on_the_host(
    tmp_path: Path,
) -> None:
    """The image names `docker compose run --rm bot` (NOWPLAYING_COMMAND); it has no editor."""
    image = {"NOWPLAYING_COMMAND": "docker compose run --rm bot"}
    env_file = tmp_path / "data" / ".env"
    image["NOWPLAYING_ENV_FILE"] = str(env_file)
    status, output = await run_command((*PYTHON_M_BOT, "setup"), image, tmp_path)
    assert status == 2
    assert output.splitlines()[1] == (
        "Run `docker compose run --rm bot setup` in a terminal, or put the values in the .env "
        "beside compose.yaml (copy .env.example there and fill it in)."
    )
    status, output = await run_command(PYTHON_M_BOT, image, tmp_path)
    assert status == 2
    assert "then run `docker compose up -d` again" in output
    env_file.parent.mkdir()
    env_file.write_text("DISCORD_TOKEN=a.b.c\n")
    status, output = await run_command(PYTHON_M_BOT, image, tmp_path)
    assert status == 2
    assert f"({env_file} is in the bot's volume: run `docker compose run --rm bot setup` " in output
    assert "then `docker compose run --rm bot check`" in output


async def test_rotate_keys_refusal_names_the_console_script(tmp_path: Path) -> None:
    database = tmp_path / "data" / "bot.db"
    lost = TokenCipher([b"l" * 32])
    async with await Storage.open(database) as storage:
        await storage.links.save_link(linked_account(7, lost.encrypt(7, "refresh")))
    env = {
        "DISCORD_TOKEN": "t",
        "SPOTIFY_CLIENT_ID": "id",
        "SPOTIFY_CLIENT_SECRET": "secret",
        "SPOTIFY_REDIRECT_URI": "http://127.0.0.1:8080/callback",
        "TOKEN_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"n" * 32).decode(),
        "DATABASE_PATH": str(database),
        "PATH": PATH_WITHOUT_VENV,
    }
    status, output = await run_command((str(CONSOLE_SCRIPT), "rotate-keys"), env, tmp_path)
    assert status == 1
    assert f"`{CONSOLE_SCRIPT} rotate-keys --skip-unreadable`" in output
    assert "python -m bot" not in output


async def test_empty_values_in_the_environment_do_not_hide_the_env_file(tmp_path: Path) -> None:
    """Issue 21 item 3: compose passes a .env copied from .env.example (`DISCORD_TOKEN=`) as
    the environment; the values setup wrote in /data/.env must still count."""
    env_file = tmp_path / "data" / ".env"
    async with FakeSpotify.running() as spotify, FakeDiscord.running() as discord:
        values = env_for_fakes(tmp_path, discord, spotify)
        env_file.parent.mkdir()
        env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
        empty = dict.fromkeys(
            (
                "DISCORD_TOKEN",
                "SPOTIFY_CLIENT_ID",
                "SPOTIFY_CLIENT_SECRET",
                "TOKEN_ENCRYPTION_KEY",
                "DATABASE_URL",
                "SHARD_COUNT",
            ),
            "",
        )
        env = {**empty, "NOWPLAYING_ENV_FILE": str(env_file)}
        status, output = await run_command((*PYTHON_M_BOT, "check"), env, tmp_path)
    assert status == 0, output
    assert "missing" not in output
    assert "Everything checked is usable." in output
