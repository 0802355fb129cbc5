"""Command line: ``python -m bot [run|check|gen-key|rotate-keys]`` (also ``nowplaying-bot``)."""

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
        return 1
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
        async with await Storage.open(settings.database_path) as storage:
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
        choices=["run", "check", "gen-key", "rotate-keys"],
        help="run the bot (default); check the setup; print a new key; re-encrypt secrets",
    )
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="rotate-keys: re-encrypt what the keys open; leave secrets no key opens as they are",
    )
    args = parser.parse_args(argv)
    if args.skip_unreadable and args.command != "rotate-keys":
        parser.error("--skip-unreadable only goes with rotate-keys")
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
