"""Builders for Discord API payloads, shaped the way discord.py 2.7 parses them.

Pure functions returning plain ``dict`` s: no server, no state; and the limits Discord enforces
beyond its OpenAPI description (:func:`message_problems`, :func:`modal_problems`). Used by the
fake Discord (`tests/fakes/discord.py`) and by tests that need a guild, a member or a Spotify
presence. Every id is a snowflake *string*, as on the wire. Defaults are sane and minimal; pass
only what a test cares about.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .discord_spec import ErrorPath, Problem

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
CHANGE_NICKNAME = 1 << 26
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 53) - 1

#: What @everyone gets in a freshly created guild (close enough for permission checks).
DEFAULT_EVERYONE_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
)
#: What the bot's own managed role gets: enough to post embeds, not administrator (so channel
#: overwrites still bite, as they do for a real bot that was invited with modest scopes).
DEFAULT_BOT_PERMISSIONS = DEFAULT_EVERYONE_PERMISSIONS | MANAGE_MESSAGES

# Channel types.
GUILD_TEXT = 0
DM = 1
GUILD_VOICE = 2
GUILD_CATEGORY = 4

# Select menus (string, user, role, mentionable, channel): their answers carry ``values``.
SELECT_TYPES = frozenset({3, 5, 6, 7, 8})

# Message flags.
EPHEMERAL = 1 << 6
LOADING = 1 << 7

# Gateway intents that the fake honours when building GUILD_CREATE and filtering dispatches.
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

_snowflake_counter = itertools.count()


def new_snowflake() -> str:
    """A fresh, unique snowflake string whose timestamp is now (so ``created_at`` is sane)."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | (next(_snowflake_counter) & 0x3FFFFF))


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def make_user(
    id: str | int | None = None,
    username: str = "listener",
    *,
    global_name: str | None = None,
    bot: bool = False,
    avatar: str | None = None,
) -> JSON:
    """A user object (``discriminator`` is "0": the post-2023 username system)."""
    return {
        "id": str(id) if id is not None else new_snowflake(),
        "username": username,
        "discriminator": "0",
        "global_name": global_name,
        "avatar": avatar,
        "bot": bot,
        "public_flags": 0,
    }


def make_role(
    id: str | int | None = None,
    name: str = "role",
    *,
    permissions: int = 0,
    position: int = 1,
    managed: bool = False,
    color: int = 0,
) -> JSON:
    """A role. ``permissions`` is an int here and a string on the wire, as Discord does."""
    return {
        "id": str(id) if id is not None else new_snowflake(),
        "name": name,
        "permissions": str(permissions),
        "position": position,
        "color": color,
        "colors": {"primary_color": color, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": managed,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }


def make_overwrite(target_id: str | int, *, member: bool, allow: int = 0, deny: int = 0) -> JSON:
    """A channel permission overwrite for a role (``member=False``) or a member."""
    return {
        "id": str(target_id),
        "type": 1 if member else 0,
        "allow": str(allow),
        "deny": str(deny),
    }


def make_channel(
    id: str | int | None = None,
    name: str = "general",
    *,
    guild_id: str | int | None = None,
    type: int = GUILD_TEXT,
    position: int = 0,
    parent_id: str | int | None = None,
    overwrites: Iterable[JSON] = (),
    topic: str | None = None,
) -> JSON:
    """A guild channel (text by default). ``guild_id`` is filled in by :func:`make_guild`."""
    return {
        "id": str(id) if id is not None else new_snowflake(),
        "type": type,
        "guild_id": str(guild_id) if guild_id is not None else None,
        "name": name,
        "position": position,
        "parent_id": str(parent_id) if parent_id is not None else None,
        "permission_overwrites": list(overwrites),
        "topic": topic,
        "nsfw": False,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
        **({"bitrate": 64000, "user_limit": 0, "rtc_region": None} if type == GUILD_VOICE else {}),
    }


def make_member(
    user: JSON | None = None,
    *,
    id: str | int | None = None,
    username: str = "listener",
    roles: Iterable[str | int] = (),
    nick: str | None = None,
    joined_at: str | None = None,
) -> JSON:
    """A guild member with its ``user``. Members carry ``flags``: discord.py requires it."""
    return {
        "user": user if user is not None else make_user(id, username),
        "roles": [str(role_id) for role_id in roles],
        "nick": nick,
        "avatar": None,
        "banner": None,
        "joined_at": joined_at or iso_now(),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }


def make_guild(
    id: str | int | None = None,
    name: str = "Test Guild",
    *,
    channels: Sequence[JSON] | None = None,
    members: Sequence[JSON] = (),
    roles: Sequence[JSON] = (),
    everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
    owner_id: str | int | None = None,
    presences: Sequence[JSON] = (),
) -> JSON:
    """A full GUILD_CREATE payload.

    The @everyone role (id == guild id) is added with ``everyone_permissions``; a single text
    channel "general" is created when ``channels`` is None. Channels get this guild's id. The
    owner (who bypasses every permission check) defaults to an id that is not a member, so
    member permissions come from roles and overwrites only. The fake adds the bot's own member.
    """
    guild_id = str(id) if id is not None else new_snowflake()
    everyone = make_role(guild_id, "@everyone", permissions=everyone_permissions, position=0)
    channel_list = list(channels) if channels is not None else [make_channel(name="general")]
    for channel in channel_list:
        channel["guild_id"] = guild_id
    return {
        "id": guild_id,
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(owner_id) if owner_id is not None else new_snowflake(),
        "application_id": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "vanity_url_code": None,
        "features": [],
        "roles": [everyone, *roles],
        "emojis": [],
        "stickers": [],
        "channels": channel_list,
        "threads": [],
        "members": list(members),
        "presences": list(presences),
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "member_count": len(members),
        "large": False,
        "unavailable": False,
        "joined_at": iso_now(),
        "lazy": True,
    }


def make_spotify_activity(
    *,
    title: str = "Song Title",
    artists: Sequence[str] = ("Artist A", "Artist B"),
    album: str = "Album Name",
    track_id: str = "4cOdK2wGLETKBW3PvgPWqT",
    album_cover_id: str = "ab67616d0000b273e8b066f70c206551210d902b",
    start_ms: int | None = None,
    duration_ms: int = 210_000,
    session_id: str = "f9c3e4a1b2d34e5f9a0b1c2d3e4f5a6b",
    party_id: str = "spotify:123456789012345678",
) -> JSON:
    """A Spotify "Listening to" activity, the way the Discord client publishes it.

    discord.py turns it into :class:`discord.Spotify` only because ``type == 2`` and both
    ``sync_id`` (the track id) and ``session_id`` are present. ``state`` is the artists joined
    with "; ", ``assets.large_text`` the album, ``assets.large_image`` "spotify:<cover id>".
    """
    start = start_ms if start_ms is not None else int(time.time() * 1000)
    return {
        "type": 2,
        "name": "Spotify",
        "id": "spotify:1",
        "flags": 48,
        "created_at": start,
        "sync_id": track_id,
        "session_id": session_id,
        "party": {"id": party_id},
        "details": title,
        "state": "; ".join(artists),
        "timestamps": {"start": start, "end": start + duration_ms},
        "assets": {"large_image": f"spotify:{album_cover_id}", "large_text": album},
    }


def make_custom_status(text: str = "vibing") -> JSON:
    """A custom status: on a real member it usually comes first, before Spotify."""
    return {"type": 4, "name": "Custom Status", "id": "custom", "state": text, "created_at": 0}


def make_presence(
    user_id: str | int,
    guild_id: str | int,
    *,
    activities: Sequence[JSON] = (),
    status: str = "online",
) -> JSON:
    """A PRESENCE_UPDATE payload (also the shape of GUILD_CREATE ``presences`` entries)."""
    return {
        "user": {"id": str(user_id)},
        "guild_id": str(guild_id),
        "status": status,
        "activities": list(activities),
        "client_status": {"desktop": status} if status != "offline" else {},
    }


def modal_submit_components(modal: JSON | None, values: Mapping[str, Any]) -> list[JSON]:
    """The ``components`` of a MODAL_SUBMIT, in the layout of the modal that was shown."""

    def answer(component: JSON, value: Any) -> JSON:
        if component["type"] in SELECT_TYPES:
            return {
                "type": component["type"],
                "custom_id": component["custom_id"],
                "values": list(value or []),
            }
        return {
            "type": 4,
            "custom_id": component["custom_id"],
            "value": "" if value is None else str(value),
        }

    if modal is None:
        return [
            {"type": 1, "components": [answer({"type": 4, "custom_id": key}, value)]}
            for key, value in values.items()
        ]
    remaining = dict(values)
    inputs: list[tuple[str | None, str]] = []

    def take(component: JSON, label: str | None) -> Any:
        inputs.append((label, component["custom_id"]))
        for key in (component["custom_id"], label):
            if key is not None and key in remaining:
                return remaining.pop(key)
        return None

    rows: list[JSON] = []
    for top in modal.get("components") or []:
        if top["type"] == 1:
            children = [c for c in top.get("components") or [] if "custom_id" in c]
            answers = [answer(c, take(c, c.get("label"))) for c in children]
            rows.append({"type": 1, "components": answers})
        elif top["type"] == 18 and "custom_id" in top.get("component", {}):
            child = top["component"]
            rows.append({"type": 18, "component": answer(child, take(child, top.get("label")))})
    if remaining:
        raise KeyError(f"the modal has no input {sorted(remaining)}; (label, custom_id): {inputs}")
    return rows


def compute_permissions(guild: Mapping[str, Any], member: Mapping[str, Any], channel: Any) -> int:
    """A member's permissions in a channel (or guild-wide when ``channel`` is None).

    Same algorithm as Discord and discord.py: owner and administrator get everything, then
    @everyone, role and member overwrites apply in that order; no VIEW_CHANNEL means nothing.
    """
    user_id = str(member["user"]["id"])
    if str(guild.get("owner_id")) == user_id:
        return ALL_PERMISSIONS
    guild_id = str(guild["id"])
    roles = {str(role["id"]): role for role in guild.get("roles", [])}
    member_roles = {str(role_id) for role_id in member.get("roles", [])}
    permissions = int(roles[guild_id]["permissions"]) if guild_id in roles else 0
    for role_id in member_roles:
        if role_id in roles:
            permissions |= int(roles[role_id]["permissions"])
    if permissions & ADMINISTRATOR:
        return ALL_PERMISSIONS
    if channel is None:
        return permissions
    overwrites = {str(o["id"]): o for o in channel.get("permission_overwrites", [])}
    everyone = overwrites.get(guild_id)
    if everyone is not None:
        permissions = (permissions & ~int(everyone["deny"])) | int(everyone["allow"])
    allow = deny = 0
    for target_id, overwrite in overwrites.items():
        if overwrite["type"] == 0 and target_id in member_roles:
            allow |= int(overwrite["allow"])
            deny |= int(overwrite["deny"])
    permissions = (permissions & ~deny) | allow
    own = overwrites.get(user_id)
    if own is not None and own["type"] == 1:
        permissions = (permissions & ~int(own["deny"])) | int(own["allow"])
    if not permissions & VIEW_CHANNEL:
        return 0
    return permissions


# --- the limits Discord documents beyond its OpenAPI description ---------------------------------
# The description (checked by discord_spec) already bounds each embed's title, description,
# fields, footer and author, custom ids and modal titles; these are the limits it leaves out or
# sets looser than Discord enforces, worded the way Discord words them.

MESSAGE_CONTENT_LIMIT = 2000  # the description allows 4,000 on POST /channels/{id}/messages
EMBED_TOTAL_LIMIT = 6000  # all embeds of a message together; not in the description
LEGACY_COMPONENT_ROWS = 5  # top-level components without IS_COMPONENTS_V2 (the description: 40)
MODAL_COMPONENT_LIMIT = 5  # a modal's top-level components (the description: 40)
IS_COMPONENTS_V2 = 1 << 15


def _embed_text_length(embed: Mapping[str, Any]) -> int:
    fields = embed.get("fields") or []
    parts = [
        embed.get("title"),
        embed.get("description"),
        (embed.get("footer") or {}).get("text"),
        (embed.get("author") or {}).get("name"),
        *(field.get("name") for field in fields),
        *(field.get("value") for field in fields),
    ]
    return sum(len(part) for part in parts if isinstance(part, str))


def message_problems(data: Mapping[str, Any], prefix: ErrorPath = ()) -> list[Problem]:
    """Why Discord would refuse this message body beyond its description (empty: it would
    not). ``prefix`` is where the message sits in the body (``("data",)`` in a callback)."""
    problems: list[Problem] = []
    content = data.get("content") or ""
    embeds = data.get("embeds") or []
    components = data.get("components") or []
    if len(content) > MESSAGE_CONTENT_LIMIT:
        problems.append(
            Problem(
                (*prefix, "content"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MESSAGE_CONTENT_LIMIT} or fewer in length.",
            )
        )
    for index, embed in enumerate(embeds):
        for field_index, field in enumerate(embed.get("fields") or []):
            for key in ("name", "value"):
                if not field.get(key):  # the description sets no minimum; Discord needs text
                    path = (*prefix, "embeds", index, "fields", field_index, key)
                    problems.append(Problem(path, "BASE_TYPE_REQUIRED", "This field is required"))
    total = sum(_embed_text_length(embed) for embed in embeds)
    if total > EMBED_TOTAL_LIMIT:
        problems.append(
            Problem(
                (*prefix, "embeds"),
                "MAX_EMBED_SIZE_EXCEEDED",
                f"Embed size exceeds maximum size of {EMBED_TOTAL_LIMIT}",
            )
        )
    is_v2 = bool(int(data.get("flags") or 0) & IS_COMPONENTS_V2)
    if not is_v2 and len(components) > LEGACY_COMPONENT_ROWS:
        problems.append(
            Problem(
                (*prefix, "components"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {LEGACY_COMPONENT_ROWS} or fewer in length.",
            )
        )
    return problems


def is_empty_message(data: Mapping[str, Any], *, has_files: bool = False) -> bool:
    keys = ("content", "embeds", "components", "sticker_ids", "poll")
    return not has_files and not any(data.get(key) for key in keys)


def modal_problems(data: Mapping[str, Any]) -> list[Problem]:
    """Why Discord would refuse a modal (callback type 9 ``data``) beyond its description."""
    if len(data.get("components") or []) > MODAL_COMPONENT_LIMIT:
        message = f"Must be {MODAL_COMPONENT_LIMIT} or fewer in length."
        return [Problem(("data", "components"), "BASE_TYPE_MAX_LENGTH", message)]
    return []
