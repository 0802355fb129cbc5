"""The now-playing message in the colour of its album art: what /np and the auto-poster send.

The colour comes from ``bot.pictures.colours`` (picked once per cover, remembered); rendering
itself is the pure :func:`bot.nowplaying.render.render_now_playing`. Without colours (tests,
benchmarks) every message keeps Spotify green.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.messages.message import BotMessage
from bot.nowplaying.render import render_now_playing
from bot.pictures.colours import CoverColours
from bot.spotify.models import CurrentlyPlaying


class NowPlayingRenderer:
    def __init__(
        self, colours: CoverColours | None, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._colours = colours
        self._wall_clock = wall_clock

    async def prepare(self, playback: CurrentlyPlaying, *, wait: float) -> None:
        """Have the cover's colour ready if it can be within ``wait`` seconds."""
        if self._colours is not None:
            await self._colours.colour_for(playback, wait=wait)

    def render(
        self,
        playback: CurrentlyPlaying,
        *,
        member_name: str,
        member_avatar_url: str | None,
        now: float | None = None,
    ) -> BotMessage:
        """The message now (or at ``now``, Unix time), in the colour already known: no I/O."""
        colour = self._colours.known(playback) if self._colours is not None else None
        return render_now_playing(
            playback,
            member_name=member_name,
            member_avatar_url=member_avatar_url,
            now=self._wall_clock() if now is None else now,
            colour=colour,
        )

    async def render_within(
        self,
        playback: CurrentlyPlaying,
        *,
        member_name: str,
        member_avatar_url: str | None,
        wait: float,
    ) -> BotMessage:
        """The message, waiting at most ``wait`` seconds for a cover colour not seen before."""
        await self.prepare(playback, wait=wait)
        return self.render(playback, member_name=member_name, member_avatar_url=member_avatar_url)
