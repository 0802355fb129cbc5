"""Auto-posting: follow members' playback and post their new tracks in the music channel.

``scheduler`` decides when each followed member is checked (pure logic, no I/O); the loop that
performs the checks and the poster that renders them live next to it.
"""

from bot.autopost.scheduler import (
    CheckKind,
    Gone,
    Idle,
    Observation,
    Playing,
    PollScheduler,
    RateLimited,
    RecordResult,
    SchedulerConfig,
    TransientError,
    observation_from_error,
    observation_from_playback,
)

__all__ = [
    "CheckKind",
    "Gone",
    "Idle",
    "Observation",
    "Playing",
    "PollScheduler",
    "RateLimited",
    "RecordResult",
    "SchedulerConfig",
    "TransientError",
    "observation_from_error",
    "observation_from_playback",
]
