"""/link, the callback page, /np and /unlink: the real bot against the fakes."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.spotify import track_payload
from tests.harness import ALICE_ID, Stack


async def test_link_then_np(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t1", "Song One", 200_000, 65_000))
        sent = await stack.np(ALICE_ID)
        reply = await sent.wait_for_reply()
        embed = reply.embeds[0]
        assert embed["title"] == "Song One"
        assert "1:05 / 3:20" in embed["description"]
