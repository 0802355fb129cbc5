"""Answering an interaction: in time, privately when it must be, and the one error handler.

Discord drops an interaction not answered within 3 s. :func:`answer_in_time` answers directly
when the work is quick and shows "thinking" first when it is not; an error after a public
"thinking" removes that message so the error handler's answer is private.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import BotError
from bot.messages.message import BotMessage, send_arguments

log = logging.getLogger(__name__)

# Answer directly when the work is quick; otherwise show "thinking" well inside Discord's 3 s.
DEFER_AFTER_SECONDS = 1.5

APOLOGY = "Sorry, something went wrong on our side. The bot owner can find the details in the log."


def user_message_for(error: BaseException) -> str | None:
    """The plain words for an expected error, or None for a bug."""
    if isinstance(error, app_commands.CommandInvokeError | commands.CommandInvokeError):
        error = error.original
    if isinstance(error, BotError):
        return error.user_message
    if isinstance(error, app_commands.MissingPermissions):
        wanted = ", ".join(
            p.replace("_", " ").replace("guild", "server") for p in error.missing_permissions
        )
        return f"You need the {wanted} permission to do that."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    return None


def command_outcome_for(error: BaseException) -> str:
    """``user_error`` when the member was told what went wrong, ``error`` for a bug."""
    return "error" if user_message_for(error) is None else "user_error"


async def reply_privately(interaction: discord.Interaction[Any], message: str) -> None:
    """Answer ephemerally whether or not the interaction was already answered or deferred."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException:
        log.warning("Could not deliver an error message for interaction %s", interaction.id)


async def handle_interaction_error(
    interaction: discord.Interaction[Any], error: BaseException
) -> None:
    """The one place that turns an exception into words for the member."""
    message = user_message_for(error)
    if message is None:
        command = interaction.command.qualified_name if interaction.command else "component"
        log.error("Unexpected error in %s", command, exc_info=error)
        message = APOLOGY
    await reply_privately(interaction, message)


async def send_message(
    interaction: discord.Interaction[Any], message: BotMessage, *, ephemeral: bool = False
) -> None:
    """Send ``message`` as the answer, or as a follow-up when the interaction was deferred."""
    arguments = send_arguments(message)
    if ephemeral:
        arguments["ephemeral"] = True
    if interaction.response.is_done():
        await interaction.followup.send(**arguments)
    else:
        await interaction.response.send_message(**arguments)


async def answer_in_time(
    interaction: discord.Interaction[Any],
    work: Callable[[], Awaitable[BotMessage]],
    *,
    ephemeral: bool = False,
) -> BotMessage:
    """Answer (publicly unless ``ephemeral``) with what ``work`` renders; "thinking" first when
    it takes over ``DEFER_AFTER_SECONDS``. An error after a public "thinking" removes that
    message, so the error handler's answer is private."""
    task = asyncio.ensure_future(work())
    try:
        message = await asyncio.wait_for(asyncio.shield(task), DEFER_AFTER_SECONDS)
    except TimeoutError:
        await interaction.response.defer(thinking=True, ephemeral=ephemeral)
        try:
            message = await task
        except Exception:
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            raise
    await send_message(interaction, message, ephemeral=ephemeral)
    return message
