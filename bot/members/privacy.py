"""Who may see whose listening: each member's visibility, and the one rule for ``member:``.

Every command that shows another member (``/np``, ``/recent``, ``/top``, ``/chart``) calls
:meth:`PrivacyService.ensure_visible` before it asks Spotify (or any record of ours) about the
target. The rule, judged only from the interaction (no REST lookup, no member cache):

* yourself: always (also in a direct message);
* in a direct message: nobody else;
* in a server: only a target the interaction resolved as a member of *that* server
  (``resolved.members`` of the ``member:`` option: discord.py then hands the command a
  ``discord.Member``; a plain ``discord.User`` means they are not in the server), and only
  while they are not private.

Visibility is ``"server"`` (the default: members of a server you are in see you there, and
you appear in auto-posts) or ``"private"`` (only you see yourself; no auto-posts anywhere;
whatever the bot logged about your listening is deleted). Choosing ``private`` emits the
member event ``private`` (``bot.members.events``: the auto-poster stops following the member,
the listening log deletes their plays); going back to ``server`` emits ``public``.
"""

from __future__ import annotations

from typing import Any

import discord

from bot.errors import BotError
from bot.members.events import MemberEvents
from bot.storage import PrivacyStore, Visibility

DM_ONLY_YOURSELF = (
    "In a direct message I can only show your own music. To see someone else's, use the "
    "command in a server you share with them."
)


def _name(target: object) -> str:
    name = getattr(target, "display_name", None)
    return str(name) if name else "That member"


def membership_refusal(
    *, guild_id: int | None, viewer_id: int, target: discord.abc.Snowflake
) -> str | None:
    """Why ``viewer_id`` may not see ``target`` where the command runs, or None when they may
    (privacy aside). ``target`` is the command's resolved ``member:`` value."""
    if target.id == viewer_id:
        return None
    if guild_id is None:
        return DM_ONLY_YOURSELF
    guild = getattr(target, "guild", None)
    if not isinstance(target, discord.Member) or guild is None or guild.id != guild_id:
        return f"{_name(target)} is not a member of this server, so I can't show their music here."
    return None


def private_refusal(target: object) -> str:
    return f"{_name(target)} keeps their listening private."


class PrivacyService:
    """Members' visibility (stored by :class:`bot.storage.PrivacyStore`) and the visibility rule.

    ``await start()`` loads the ids of private members once: :meth:`is_private_now` answers
    from that set with no database read (the auto-poster asks on every observation). Its size
    is bounded by the members who chose private: one int each, a few dozen bytes.
    :meth:`is_private` reads the database (one indexed row) and is what commands use.
    """

    def __init__(self, storage: PrivacyStore, events: MemberEvents) -> None:
        self._storage = storage
        self._events = events
        self._private: set[int] = set()

    async def start(self) -> None:
        self._private = await self._storage.list_private_user_ids()

    # --- the interface other services use -----------------------------------------------

    async def visibility(self, user_id: int) -> Visibility:
        """The member's visibility: ``"server"`` unless they chose ``"private"``."""
        value = await self._storage.get_visibility(user_id)
        self._remember(user_id, value)
        return value

    async def is_private(self, user_id: int) -> bool:
        """True when the member chose private (read from the database)."""
        return await self.visibility(user_id) == "private"

    def is_private_now(self, user_id: int) -> bool:
        """The same answer from memory (loaded by ``start``, kept by ``set_visibility``)."""
        return user_id in self._private

    async def set_visibility(self, user_id: int, value: Visibility) -> Visibility:
        """Store the member's choice and apply it at once; return the previous visibility."""
        previous = await self._storage.get_visibility(user_id)
        # In memory first: an auto-post racing with this command sees the member as private.
        self._remember(user_id, value)
        await self._storage.set_visibility(user_id, value)
        if value == "private":
            await self._events.emit("private", user_id)
        elif previous == "private":
            await self._events.emit("public", user_id)
        return previous

    async def reload(self, user_id: int) -> None:
        """Another process changed the member's visibility: read it and apply it here."""
        was_private = self.is_private_now(user_id)
        now_private = await self.is_private(user_id)  # reads it and keeps it in memory
        if now_private and not was_private:
            await self._events.emit("private", user_id, here=False)
        elif was_private and not now_private:
            await self._events.emit("public", user_id, here=False)

    async def refusal(
        self, interaction: discord.Interaction[Any], target: discord.abc.Snowflake | None
    ) -> str | None:
        """Why the member running ``interaction`` may not see ``target`` (the ``member:``
        option; None means themselves), or None when they may. The one rule of this module:
        callers make no Spotify call and read no record about a refused target."""
        if target is None or target.id == interaction.user.id:
            return None
        refused = membership_refusal(
            guild_id=interaction.guild_id, viewer_id=interaction.user.id, target=target
        )
        if refused is not None:
            return refused
        if await self.is_private(target.id):
            return private_refusal(target)
        return None

    async def answers_only_to_viewer(
        self, interaction: discord.Interaction[Any], target: discord.abc.Snowflake | None
    ) -> bool:
        """True when the command is about the viewer themselves and they are private: their own
        answer is then shown only to them (ephemeral). ``target`` as for :meth:`refusal`."""
        viewer_id = interaction.user.id
        if target is not None and target.id != viewer_id:
            return False
        return await self.is_private(viewer_id)

    async def ensure_visible(
        self, interaction: discord.Interaction[Any], target: discord.abc.Snowflake | None
    ) -> None:
        """Raise :class:`bot.errors.BotError` with the plain answer when :meth:`refusal` says
        no; the command tree's error handler sends it privately."""
        refused = await self.refusal(interaction, target)
        if refused is not None:
            raise BotError(user_message=refused)

    # --- internals ------------------------------------------------------------------------

    def _remember(self, user_id: int, value: Visibility) -> None:
        if value == "private":
            self._private.add(user_id)
        else:
            self._private.discard(user_id)


__all__ = [
    "DM_ONLY_YOURSELF",
    "PrivacyService",
    "Visibility",
    "membership_refusal",
    "private_refusal",
]
