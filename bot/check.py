"""``python -m bot check``: the setup doctor (being written; see issue 6)."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import load_settings
from bot.errors import ConfigError


def run_check(env: Mapping[str, str]) -> int:
    try:
        load_settings(env)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"problem  {problem}")
        return 1
    print("ok       settings")
    return 0
