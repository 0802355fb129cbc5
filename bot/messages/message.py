"""The message value the bot sends, and the keyword arguments that send or edit it.

A rendered message is a plain value (:class:`BotMessage`: content, embed, link buttons, a
picture) so that renderers stay pure and the auto-post outbox can store it; discord.py objects
(the view of buttons, the file) are made only when it is sent, inside the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import discord

from bot.messages.text import BUTTON_LABEL_LIMIT, BUTTONS_PER_VIEW, truncate


@dataclass(frozen=True, slots=True)
class LinkButton:
    """A URL button; :func:`make_view` turns these into ``discord.ui.Button`` objects."""

    label: str
    url: str


@dataclass(frozen=True, slots=True)
class BotMessage:
    """What to send: ``embed`` and/or ``content``, link buttons for :func:`make_view`, and
    optionally a picture the embed shows (``(file name, PNG bytes)``)."""

    embed: discord.Embed | None = None
    content: str | None = None
    buttons: tuple[LinkButton, ...] = ()
    picture: tuple[str, bytes] | None = None


def with_picture(message: BotMessage, name: str, png: bytes) -> BotMessage:
    """The same message with ``png`` attached and shown as the embed's image (a message
    without an embed, a plain sentence, gets no picture)."""
    if message.embed is None:
        return message
    message.embed.set_image(url=f"attachment://{name}")
    return BotMessage(message.embed, message.content, message.buttons, (name, png))


def make_view(buttons: Sequence[LinkButton]) -> discord.ui.View | None:
    """A view of link buttons, or None when there are none (send no ``view=`` then).

    Call it inside the running event loop (in a command or task, as the cogs do): a
    ``discord.ui.View`` looks up the running loop in ``__init__`` for its stop future (2.7.1
    falls back to creating it lazily; older discord.py versions raised without a loop).
    The view has no timeout: link buttons need no callbacks, so nothing should expire.
    """
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons[:BUTTONS_PER_VIEW]:
        view.add_item(
            discord.ui.Button(
                style=discord.ButtonStyle.link,
                label=truncate(button.label, BUTTON_LABEL_LIMIT),
                url=button.url,
            )
        )
    return view


def send_arguments(message: BotMessage) -> dict[str, Any]:
    """The keyword arguments that send ``message``, the same for every answer
    (``send_message``, ``followup.send``) and auto-posts (``channel.send``): no mentions ever
    ping, and what the message lacks is left out. Builds the view and the file: call it inside
    the event loop."""
    arguments = {
        name: value for name, value in edit_arguments(message).items() if value is not None
    }
    if message.picture is not None:
        name, png = message.picture
        arguments["file"] = discord.File(io.BytesIO(png), filename=name)
    return arguments


def edit_arguments(message: BotMessage) -> dict[str, Any]:
    """Like :func:`send_arguments` for ``Message.edit``: what the message lacks is cleared."""
    return {
        "content": message.content,
        "embed": message.embed,
        "view": make_view(message.buttons),
        "allowed_mentions": discord.AllowedMentions.none(),
    }
