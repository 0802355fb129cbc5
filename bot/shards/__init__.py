"""What the processes of one bot (several shards on one PostgreSQL) coordinate: IDENTIFY
turns, member changes, Spotify's budget and 429 holds, and which members a Discord presence
covers. On SQLite (one process) ``Storage.listen`` and ``Storage.notify`` do nothing."""

from bot.shards.identify import IDENTIFY_INTERVAL, IdentifyGate
from bot.shards.members import MEMBER_CHANNEL, MemberChangeRelay
from bot.shards.spotify import (
    HOLDS_CHANNEL,
    REQUESTS_CHANNEL,
    SharedRequestCount,
    SharedSpotifyHold,
)

__all__ = [
    "HOLDS_CHANNEL",
    "IDENTIFY_INTERVAL",
    "MEMBER_CHANNEL",
    "REQUESTS_CHANNEL",
    "IdentifyGate",
    "MemberChangeRelay",
    "SharedRequestCount",
    "SharedSpotifyHold",
]
