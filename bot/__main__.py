"""Command line: ``nowplaying-bot [run|check|setup|gen-key|rotate-keys|migrate-db]`` (or
``python -m bot``)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bot.cli.dotenv import environment_with_dotenv
from bot.cli.invocation import (
    ENV_FILE_VARIABLE,
    EnvFile,
    command_name,
    create_advice,
    edit_advice,
    in_container,
    locate_env_file,
)
from bot.config import Settings, generate_key, load_settings
from bot.errors import ConfigError, DecryptionError, StartupError

log = logging.getLogger("bot")

REQUIRED = (
    "DISCORD_TOKEN",
    "SPOTIFY_CLIENT_ID",
    "SPOTIFY_CLIENT_SECRET",
    "SPOTIFY_REDIRECT_URI",
    "TOKEN_ENCRYPTION_KEY",
)
EXIT_CONFIG = 2
MIGRATE_DB_NEEDS = (
    "needs the PostgreSQL database to copy into: --to postgresql://user@host:5432/dbname, or "
    "DATABASE_URL in the environment or .env (the password in PGPASSWORD keeps it off the "
    "command line)"
)


@dataclass(frozen=True, slots=True)
class Invocation:
    """What this run was started as: the command to name in hints and the ``.env`` it reads."""

    command: str
    env_file: EnvFile
    interactive: bool

    def hint(self, subcommand: str = "") -> str:
        """A command to paste: ``nowplaying-bot --env-file /etc/np.env check``."""
        if not subcommand and in_container(self.command):
            return "docker compose up -d"  # the bot runs as a service, not from `run`
        parts = [self.command]
        if self.env_file.named_by == "--env-file":
            parts.append(f"--env-file {shlex.quote(str(self.env_file.path))}")
        if subcommand:
            parts.append(subcommand)
        return " ".join(parts)

    def environment(self) -> dict[str, str]:
        """The environment over the ``.env`` file; exit 2 with one line if it is unreadable."""
        try:
            return environment_with_dotenv(dotenv=self.env_file.path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            _fail(f"cannot read {self.env_file.describe()}: {reason}")

    def where_read(self) -> str:
        if self.env_file.exists:
            return f"Settings were read from the environment and {self.env_file.describe()}."
        return (
            f"No .env file was found at {self.env_file.describe()}; only the environment was read."
        )


def _fail(line: str) -> NoReturn:
    print(f"nowplaying-bot: {line}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def _is_unconfigured(env: Mapping[str, str]) -> bool:
    return not any((env.get(name) or "").strip() for name in REQUIRED)


def _settings_or_exit(invocation: Invocation, env: Mapping[str, str]) -> Settings:
    try:
        return load_settings(env, command=invocation.command)
    except ConfigError as exc:
        print("nowplaying-bot: cannot start, the configuration has problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        print(invocation.where_read(), file=sys.stderr)
        print(
            f"Next: run `{invocation.hint('setup')}` to write a .env, or fix the values above "
            f"({edit_advice(invocation.command, invocation.env_file)}; every setting is "
            f"described in .env.example), then `{invocation.hint('check')}`.",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG) from None


def _not_configured(invocation: Invocation) -> int:
    """The two lines that get a user going when there is nothing to start from."""
    where = (
        f"no file at {invocation.env_file.describe()}"
        if not invocation.env_file.exists
        else f"{invocation.env_file.describe()} sets none of them"
    )
    print(
        f"nowplaying-bot: not configured yet ({where}, and no DISCORD_TOKEN, SPOTIFY_* or "
        "TOKEN_ENCRYPTION_KEY in the environment).",
        file=sys.stderr,
    )
    print(
        f"Run `{invocation.hint('setup')}` in a terminal to create it, "
        f"{create_advice(invocation.command, invocation.env_file)}; then run "
        f"`{invocation.hint()}` again.",
        file=sys.stderr,
    )
    return EXIT_CONFIG


# --- commands -------------------------------------------------------------------------------


def _command_run(invocation: Invocation, args: argparse.Namespace) -> int:
    env = invocation.environment()
    if _is_unconfigured(env):
        if not invocation.interactive:
            return _not_configured(invocation)
        from bot.cli.setup import SetupCancelled, Terminal, confirm

        terminal = Terminal()
        terminal.say(f"No configuration yet. {invocation.where_read()}")
        try:
            wanted = confirm(terminal, "Set up the bot now?", default=True)
        except SetupCancelled:
            wanted = False
            print()
        if not wanted:
            return _not_configured(invocation)
        status = _setup_then_check(invocation)
        if status != 0:
            return status
        env = invocation.environment()
        print(f"Starting the bot (next time just run `{invocation.hint()}`).")
    return _start(invocation, env)


def _start(invocation: Invocation, env: Mapping[str, str]) -> int:
    from bot.aio.signals import stop_on_signals
    from bot.app import Application
    from bot.logs import configure_logging, masker_for_settings
    from bot.web.connections import raise_open_file_limit

    settings = _settings_or_exit(invocation, env)
    masker = masker_for_settings(settings)
    configure_logging(settings.log_level, settings.log_format, masker)
    raise_open_file_limit()  # before any socket: the web server's share is a quarter of it
    exposed = invocation.env_file.exposure()
    if exposed is not None:
        log.warning("%s", exposed)

    async def main() -> None:
        with stop_on_signals() as stop:
            async with Application(settings, masker=masker, command=invocation.command) as app:
                await app.run_until_stopped(stop)

    try:
        asyncio.run(main())
    except StartupError as exc:
        log.critical("%s", exc)
        return exc.exit_status
    except KeyboardInterrupt:
        return 0
    except Exception:
        log.critical("The bot stopped because of an unexpected error", exc_info=True)
        return 1
    return 0


def _setup_then_check(invocation: Invocation) -> int:
    """Ask, write ``.env``, run ``check``: 0 when the bot is usable."""
    from bot.cli.check import run_check
    from bot.cli.setup import SetupCancelled, run_setup

    try:
        written = run_setup(
            invocation.env_file.path,
            command=invocation.command,
            environ=invocation.environment(),
        )
    except SetupCancelled as cancelled:
        print("\nSetup cancelled; nothing was written.")
        return cancelled.status
    if not written:
        return 1
    print(f"\nChecking the setup (`{invocation.hint('check')}`):")
    status = run_check(
        invocation.environment(),
        command=invocation.command,
        source=invocation.where_read(),
        env_file=invocation.env_file,
    )
    if status != 0:
        print(
            f"Fix the problems above ({edit_advice(invocation.command, invocation.env_file)}), "
            f"then run `{invocation.hint('check')}` and `{invocation.hint()}`."
        )
    return status


def _command_setup(invocation: Invocation, args: argparse.Namespace) -> int:
    if not invocation.interactive:
        print(
            "nowplaying-bot: setup asks for secrets and needs an interactive terminal.",
            file=sys.stderr,
        )
        print(
            f"Run `{invocation.hint('setup')}` in a terminal, "
            f"{create_advice(invocation.command, invocation.env_file)}.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    status = _setup_then_check(invocation)
    if status == 0:
        print(f"Start the bot with `{invocation.hint()}`.")
    return status


def _command_gen_key(invocation: Invocation, args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _command_rotate_keys(invocation: Invocation, args: argparse.Namespace) -> int:
    from bot.crypto import TokenCipher
    from bot.storage import Storage
    from bot.storage.secrets import count_secrets_by_key, rotate_keys

    settings = _settings_or_exit(invocation, invocation.environment())

    async def main() -> tuple[int, int]:
        cipher = TokenCipher(settings.token_encryption_keys)
        async with await Storage.open(settings.database_target) as storage:
            changed = await rotate_keys(
                storage,
                cipher,
                skip_undecryptable=args.skip_unreadable,
                command=invocation.command,
            )
            _, _, unreadable = await count_secrets_by_key(storage.sealed, cipher)
            return changed, unreadable

    try:
        changed, unreadable = asyncio.run(main())
    except DecryptionError as exc:
        print(f"rotate-keys: {exc}", file=sys.stderr)
        return 1
    print(f"Re-encrypted {changed} stored secret(s) with the first key.")
    if unreadable:
        print(
            f"Left {unreadable} stored secret(s) that no configured key opens as they were; "
            "those members must run /link again."
        )
    return 0


def _command_check(invocation: Invocation, args: argparse.Namespace) -> int:
    from bot.cli.check import run_check

    env = invocation.environment()
    if _is_unconfigured(env):
        return _not_configured(invocation)
    return run_check(
        env,
        command=invocation.command,
        source=invocation.where_read(),
        env_file=invocation.env_file,
        reset_budget=args.reset_spotify_budget,
    )


def _command_migrate_db(invocation: Invocation, args: argparse.Namespace) -> int:
    """Copy the SQLite install (DATABASE_PATH) into an empty PostgreSQL database: ``--to``,
    else DATABASE_URL (so the password need not be on the command line: PGPASSWORD works too)."""
    from bot.config import check_database_url, database_url_passwords, redact_database_url
    from bot.storage.connect import CONNECT_ERRORS, refusal_line
    from bot.storage.transfer import TransferRefused, copy_sqlite_to_postgresql

    env = invocation.environment()
    target_url: str = args.to or env.get("DATABASE_URL", "").strip()
    if not target_url:
        print(f"migrate-db: {MIGRATE_DB_NEEDS}", file=sys.stderr)
        return EXIT_CONFIG
    shown = redact_database_url(target_url)
    problem = check_database_url(target_url)
    if problem:
        named = "--to" if args.to else "DATABASE_URL"
        print(f"migrate-db: {named} '{shown}' {problem}", file=sys.stderr)
        return EXIT_CONFIG
    password = None if database_url_passwords(target_url) else env.get("PGPASSWORD") or None
    source = Path(env.get("DATABASE_PATH") or "data/bot.db")
    if not source.is_file():
        print(
            f"migrate-db: {source} does not exist: nothing to copy (is DATABASE_PATH right?)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        report = asyncio.run(copy_sqlite_to_postgresql(source, target_url, password=password))
    except TransferRefused as exc:
        print(f"migrate-db: {exc}; nothing was written", file=sys.stderr)
        return 1
    except CONNECT_ERRORS as exc:
        print(f"migrate-db: {refusal_line(exc, shown)}", file=sys.stderr)
        return EXIT_CONFIG
    for table, rows in sorted(report.rows_by_table.items()):
        print(f"  {table}: {rows} row(s)")
    print(
        f"Copied {report.total_rows} row(s) in {len(report.rows_by_table)} table(s) from "
        f"{source} to {shown} (schema version {report.schema_version}); every table's row "
        "count matches. Secrets were copied still encrypted: keep the same "
        "TOKEN_ENCRYPTION_KEY."
    )
    if args.to:
        print(f"Next: set DATABASE_URL={shown} (with its password) and start the bot.")
    else:
        print("Next: start the bot; it uses DATABASE_URL already.")
    return 0


COMMANDS: dict[str, tuple[Callable[[Invocation, argparse.Namespace], int], str]] = {
    "run": (_command_run, "run the bot (the default)"),
    "check": (_command_check, "check the setup; print the redirect URI and the invite URL"),
    "setup": (_command_setup, "ask for the Discord and Spotify values and write .env"),
    "gen-key": (_command_gen_key, "print a new TOKEN_ENCRYPTION_KEY"),
    "rotate-keys": (_command_rotate_keys, "re-encrypt stored secrets with the first key"),
    "migrate-db": (_command_migrate_db, "copy the SQLite database into an empty PostgreSQL one"),
}


def _version() -> str:
    try:
        return importlib.metadata.version("nowplaying-bot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(command: str) -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=command,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Discord bot that shows what members are listening to on Spotify.",
        epilog=(
            f"commands:\n{commands}\n\n"
            "configuration:\n"
            "  Settings come from the environment and from a .env file; the environment wins.\n"
            "  The .env file is the one named by --env-file, else by the NOWPLAYING_ENV_FILE\n"
            "  variable, else .env in the working directory (here: "
            f"{Path.cwd() / '.env'}).\n"
            "  Every setting is described in .env.example; "
            f"`{command} setup` writes a .env for you."
        ),
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=list(COMMANDS),
        metavar="command",
        help="one of: " + ", ".join(COMMANDS),
    )
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="rotate-keys: re-encrypt what the keys open; leave secrets no key opens as they are",
    )
    parser.add_argument(
        "--reset-spotify-budget",
        action="store_true",
        help="check: first forget the daily Spotify budget (its count, a QUOTA_EXCEEDED hold, "
        "what was learned from one)",
    )
    parser.add_argument(
        "--to",
        metavar="POSTGRESQL_URL",
        help="migrate-db: the empty PostgreSQL database to copy into (postgresql://...; "
        "default: DATABASE_URL)",
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help=f"the .env file to read (default: ${ENV_FILE_VARIABLE}, else ./.env)",
    )
    parser.add_argument("--version", action="version", version=f"nowplaying-bot {_version()}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    command = command_name()
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.skip_unreadable and args.command != "rotate-keys":
        parser.error("--skip-unreadable only goes with rotate-keys")
    if args.reset_spotify_budget and args.command != "check":
        parser.error("--reset-spotify-budget only goes with check")
    if args.to is not None and args.command != "migrate-db":
        parser.error("--to only goes with migrate-db")
    invocation = Invocation(
        command=command,
        env_file=locate_env_file(args.env_file),
        interactive=sys.stdin.isatty() and sys.stdout.isatty(),
    )
    # A file named on the command line must exist (a typo would go unnoticed otherwise); one
    # named by NOWPLAYING_ENV_FILE may not exist yet: a service (or the container image) names
    # where setup writes it, and the values may all come from the environment meanwhile.
    first_run = args.command == "run" and invocation.interactive  # setup offers to create it
    if (
        args.command in ("run", "check", "rotate-keys", "migrate-db")
        and invocation.env_file.named_by == "--env-file"
        and not invocation.env_file.exists
        and not first_run
    ):
        print(
            f"nowplaying-bot: {invocation.env_file.describe()} does not exist; run "
            f"`{invocation.hint('setup')}` to create it.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    handler, _ = COMMANDS[args.command]
    try:
        return handler(invocation, args)
    except KeyboardInterrupt:  # Ctrl-C outside the bot's own run (setup, check): no traceback
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
