"""The import contract (``lint-imports`` in .ci/run) names every part of the bot, so a new
module or package cannot sit outside the layers of docs/ARCHITECTURE.md unnoticed."""

from __future__ import annotations

import pkgutil
import re
import tomllib
from pathlib import Path

import bot
import bot.autopost

ROOT = Path(__file__).resolve().parent.parent


def _contract(contract_id: str) -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["id"] == contract_id]
    return dict(contract)


def _named(contract: dict[str, object]) -> set[str]:
    layers = contract["layers"]
    assert isinstance(layers, list)
    return {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}


def test_every_part_of_the_bot_is_in_a_layer() -> None:
    parts = {f"bot.{info.name}" for info in pkgutil.iter_modules(bot.__path__)}
    assert _named(_contract("layers")) == parts | {"cogs"}


def test_the_top_of_bot_stays_small() -> None:
    modules = [info.name for info in pkgutil.iter_modules(bot.__path__) if not info.ispkg]
    assert len(modules) <= 12, modules


def test_every_part_of_the_auto_poster_is_in_a_layer() -> None:
    parts = {info.name for info in pkgutil.iter_modules(bot.autopost.__path__)}
    assert _named(_contract("autopost")) == parts
