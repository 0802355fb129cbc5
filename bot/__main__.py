"""Command line: ``python -m bot [run|check|gen-key|rotate-keys|migrate-db]`` (also
``nowplaying-bot``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from bot.config import Settings, environment_with_dotenv, generate_key, load_settings
from bot.errors import ConfigError, DecryptionError

log = logging.getLogger("bot")


def _settings_or_exit() -> Settings:
    try:
        return load_settings(environment_with_dotenv())
    except ConfigError as exc:
        print("nowplaying-bot: cannot start, the configuration has problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        print("See .env.example for every setting.", file=sys.stderr)
        raise SystemExit(2) from None


def _command_run() -> int:
    from bot.app import Application, StartupError
    from bot.logs import configure_logging, masker_for_settings

    settings = _settings_or_exit()
    masker = masker_for_settings(settings)
    configure_logging(settings.log_level, settings.log_format, masker)
    if settings.enable_presence:
        log.info(
            "Presence mode is on: the Presence and Server Members intents must be switched on "
            "in the Discord Developer Portal (Bot -> Privileged Gateway Intents)."
        )

    async def main() -> None:
        async with Application(settings, masker=masker) as app:
            await app.run_until_stopped()

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


def _command_gen_key() -> int:
    print(generate_key())
    return 0


def _command_rotate_keys(*, skip_unreadable: bool = False) -> int:
    from bot.crypto import TokenCipher
    from bot.maintenance import count_secrets_by_key, rotate_keys
    from bot.storage import Storage

    settings = _settings_or_exit()

    async def main() -> tuple[int, int]:
        cipher = TokenCipher(settings.token_encryption_keys)
        async with await Storage.open(settings.database_target) as storage:
            changed = await rotate_keys(storage, cipher, skip_undecryptable=skip_unreadable)
            _, _, unreadable = await count_secrets_by_key(storage, cipher)
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


def _command_migrate_db(target_url: str) -> int:
    """Copy the SQLite install (DATABASE_PATH) into an empty PostgreSQL database."""
    from pathlib import Path

    from bot.backends.startup import CONNECT_ERRORS, refusal_line
    from bot.backends.transfer import TransferRefused, copy_sqlite_to_postgresql
    from bot.config import check_database_url, redact_database_url

    shown = redact_database_url(target_url)
    problem = check_database_url(target_url)
    if problem:
        print(f"migrate-db: --to '{shown}' {problem}", file=sys.stderr)
        return 2
    env = environment_with_dotenv()
    source = Path(env.get("DATABASE_PATH") or "data/bot.db")
    if not source.is_file():
        print(
            f"migrate-db: {source} does not exist: nothing to copy (is DATABASE_PATH right?)",
            file=sys.stderr,
        )
        return 2
    try:
        report = asyncio.run(copy_sqlite_to_postgresql(source, target_url))
    except TransferRefused as exc:
        print(f"migrate-db: {exc}; nothing was written", file=sys.stderr)
        return 1
    except CONNECT_ERRORS as exc:
        print(f"migrate-db: {refusal_line(exc, shown)}", file=sys.stderr)
        return 2
    for table, rows in sorted(report.rows_by_table.items()):
        print(f"  {table}: {rows} row(s)")
    print(
        f"Copied {report.total_rows} row(s) in {len(report.rows_by_table)} table(s) from "
        f"{source} to {shown} (schema version {report.schema_version}); every table's row "
        "count matches. Secrets were copied still encrypted: keep the same "
        "TOKEN_ENCRYPTION_KEY."
    )
    print(f"Next: set DATABASE_URL={shown} (with its password) and start the bot.")
    return 0


def _command_check() -> int:
    from bot.check import run_check

    return run_check(environment_with_dotenv())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nowplaying-bot",
        description="Discord bot that shows what members are listening to on Spotify.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "check", "gen-key", "rotate-keys", "migrate-db"],
        help="run the bot (default); check the setup; print a new key; re-encrypt secrets; "
        "copy the SQLite database into PostgreSQL",
    )
    parser.add_argument(
        "--to",
        metavar="POSTGRESQL_URL",
        help="migrate-db: the empty PostgreSQL database to copy into (postgresql://...)",
    )
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="rotate-keys: re-encrypt what the keys open; leave secrets no key opens as they are",
    )
    args = parser.parse_args(argv)
    if args.skip_unreadable and args.command != "rotate-keys":
        parser.error("--skip-unreadable only goes with rotate-keys")
    if args.to is not None and args.command != "migrate-db":
        parser.error("--to only goes with migrate-db")
    if args.command == "migrate-db":
        if not args.to:
            parser.error("migrate-db needs --to postgresql://user:password@host:5432/dbname")
        return _command_migrate_db(args.to)
    if args.command == "rotate-keys":
        return _command_rotate_keys(skip_unreadable=args.skip_unreadable)
    commands = {
        "run": _command_run,
        "check": _command_check,
        "gen-key": _command_gen_key,
    }
    return commands[args.command]()


if __name__ == "__main__":
    sys.exit(main())
