"""A link belongs to its owner: the real bot against the fake Discord and the fake Spotify.

Takeovers, /link's cooldown, a busy database, and links that wait for a Spotify hold (also
across a restart), as members and their browsers meet them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.fakes.spotify import FakeSpotify, track_payload
from tests.harness import ALICE_ID, BOB_ID, Stack, authorize_url_of, components_flat
from tests.helpers import query_of
from tests.peek import count_link_states


async def callback_address(stack: Stack, authorize_url: str) -> str:
    async with stack.http.get(authorize_url, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def test_a_button_sent_to_someone_else_cannot_move_their_account(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(BOB_ID, "bob")  # Bob is linked
        bob_dms = len(stack.discord.dms_to(BOB_ID))
        # Alice runs /link and sends her button to Bob, who approves it signed in as himself.
        url = await stack.start_link(ALICE_ID)
        alice_dms = len(stack.discord.dms_to(ALICE_ID))
        stack.spotify.approve_as("bob")
        status, _, body = await stack.follow(url)
        assert status == 409
        assert "linked to another Discord account" in body
        assert "/unlink" in body
        assert "Bob" not in body
        assert "bob" not in body.lower().replace("nowplaying-bot", "")

        # Bob's link is untouched; Alice got nothing of his.
        link = await stack.app.services.storage.links.get_link(BOB_ID)
        assert link is not None
        assert link.spotify_user_id == "bob"
        assert await stack.app.services.storage.links.get_link(ALICE_ID) is None
        stack.spotify.set_playing("bob", track_payload("b1", "Bob's Song", 200_000, 1_000))
        alice_np = await (await stack.np(ALICE_ID)).wait_for_reply()
        assert "Bob's Song" not in str(alice_np.embeds) + alice_np.content
        assert "/link" in alice_np.content
        bob_np = await (await stack.np(BOB_ID)).wait_for_reply()
        assert bob_np.embeds[0]["title"] == "Bob's Song"
        await asyncio.sleep(0.05)
        assert len(stack.discord.dms_to(ALICE_ID)) == alice_dms  # no "linked" DM to anyone
        assert len(stack.discord.dms_to(BOB_ID)) == bob_dms


async def test_link_again_inside_the_cooldown_gets_the_same_button(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        first_url = await stack.start_link(ALICE_ID)
        dms = len(stack.discord.dms_to(ALICE_ID))
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert "still works" in reply.content
        labels = {c.get("label") for c in components_flat(reply.components)}
        assert labels == {"Link Spotify", "Paste the link"}
        assert authorize_url_of(reply.components) == first_url
        assert len(stack.discord.dms_to(ALICE_ID)) == dms  # no second DM
        assert await count_link_states(stack.app.services.storage, ALICE_ID) == 1
        # The button works.
        stack.spotify.approve_as("alice")
        status, _, body = await stack.follow(first_url)
        assert status == 200
        assert "Linked as Alice" in body


async def test_link_answers_in_time_while_another_process_holds_the_database(
    tmp_path: Path,
) -> None:
    async with Stack.running(tmp_path) as stack:
        async with stack.database_write_lock_held():  # another process writing
            sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
            callback = await sent.wait_for_callback(timeout=3)
            assert callback.type == 5  # "thinking", privately
            assert sent.callback_latency < 3
            await asyncio.sleep(3.2)  # well past Discord's 3 s, and the lock still held
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert "direct messages" in reply.content
        dm = await stack.discord.wait_for_dm(ALICE_ID)
        assert query_of(authorize_url_of(dm.components))["state"]


async def test_a_web_api_hold_finishes_the_link_by_itself(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        url = await stack.start_link(ALICE_ID)
        stack.spotify.approve_as("alice")
        stack.spotify.fail_next("me", 429, retry_after=1)
        started = time.monotonic()
        status, _, body = await stack.follow(url)
        assert status == 202
        assert "Almost done" in body
        assert stack.spotify.call_count("token") == 1  # the code was exchanged at once
        dm = await stack.discord.wait_for_dm(ALICE_ID, predicate=lambda m: "Linked as" in m.content)
        assert time.monotonic() - started >= 0.9  # not before the hold ended
        assert dm.content.startswith("Linked as **Alice**")
        stack.spotify.set_playing("alice", track_payload("a1", "Held Song", 200_000, 1_000))
        reply = await (await stack.np(ALICE_ID)).wait_for_reply()
        assert reply.embeds[0]["title"] == "Held Song"


async def test_a_link_waiting_for_a_hold_survives_a_restart(tmp_path: Path) -> None:
    async with FakeSpotify.running(redirect_uris=[]) as spotify:
        async with Stack.running(tmp_path, spotify=spotify) as stack:
            url = await stack.start_link(ALICE_ID)
            spotify.approve_as("alice")
            spotify.fail_next("me", 429, retry_after=3600)
            status, _, body = await stack.follow(url)
            assert status == 202
            assert "60 min" in body
            assert len(await stack.app.services.storage.link_states.list_pending_links()) == 1
        # The bot restarts (Spotify's hold is long over by the time it is back).
        async with Stack.running(tmp_path, spotify=spotify) as stack:
            dm = await stack.discord.wait_for_dm(
                ALICE_ID, predicate=lambda m: "Linked as" in m.content
            )
            assert dm.content.startswith("Linked as **Alice**")
            assert await stack.app.services.storage.link_states.list_pending_links() == []
            link = await stack.app.services.links.current_link(ALICE_ID)
            assert link is not None
            assert link.spotify_user_id == "alice"
