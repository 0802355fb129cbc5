"""/link, the callback page, the paste modal, /np and /unlink: the real bot against the fakes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from bot.app import Application
from cogs.linking import PASTE_BUTTON_ID
from tests.fakes.discord import FakeMessage, SentInteraction
from tests.fakes.discord_payloads import INTENT_GUILD_MEMBERS, INTENT_GUILD_PRESENCES
from tests.fakes.spotify import (
    NOT_REGISTERED_TEXT,
    episode_payload,
    track_payload,
)
from tests.harness import (
    ADMIN_ID,
    ALICE_ID,
    BOB_ID,
    CAROL_ID,
    GUILD_ID,
    Stack,
    authorize_url_of,
    components_flat,
)
from tests.helpers import eventually, query_of

PASTE_LABEL = "Paste the link"
ADDRESS_LABEL = "Address from your browser's address bar"


# --- helpers -------------------------------------------------------------------------------


async def redirect_location(stack: Stack, authorize_url: str) -> str:
    """Where Spotify sends the browser after consent, without going there."""
    async with stack.http.get(authorize_url, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def link_dm(stack: Stack, user_id: int) -> FakeMessage:
    """Run /link; return the DM that carries the buttons."""
    before = len(stack.discord.dms_to(user_id))
    sent = await stack.discord.send_slash_command("link", {}, user_id=str(user_id))
    reply = await sent.wait_for_reply()
    assert reply.ephemeral
    new_dms = await stack.discord.wait_for(lambda: stack.discord.dms_to(user_id)[before:] or None)
    return new_dms[-1]


async def wait_dm(stack: Stack, user_id: int, text: str) -> FakeMessage:
    return await stack.discord.wait_for_dm(user_id, predicate=lambda m: text in m.content)


async def paste(stack: Stack, on: FakeMessage, user_id: int, address: str) -> FakeMessage:
    """Press "Paste the link" on a message, paste ``address`` into the modal; the answer."""
    click = await stack.discord.click(on, label=PASTE_LABEL, user_id=str(user_id))
    modal = await click.wait_for_modal()
    assert modal["title"] == "Finish linking Spotify"
    submitted = await click.submit_modal({ADDRESS_LABEL: address})
    reply = await submitted.wait_for_reply()
    assert reply.ephemeral
    return reply


def buttons(message: FakeMessage | Any) -> dict[str, dict[str, Any]]:
    return {c.get("label", ""): c for c in components_flat(message.components)}


async def np_reply(stack: Stack, user_id: int, member_id: int | None = None) -> FakeMessage:
    sent = await stack.np(user_id, member_id)
    return await sent.wait_for_reply()


async def np_answer(
    stack: Stack, user_id: int, member_id: int | None = None
) -> tuple[SentInteraction, FakeMessage]:
    sent = await stack.np(user_id, member_id)
    return sent, await sent.wait_for_reply()


# --- start-up ------------------------------------------------------------------------------


async def test_start_up_syncs_the_commands_to_the_dev_guild(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        sync = await stack.discord.wait_for_command_sync(str(GUILD_ID))
        assert {"link", "unlink", "np"} <= set(sync.names)
        assert [s for s in stack.discord.command_syncs if s.guild_id is None] == []
        np_command = next(c for c in sync.commands if c["name"] == "np")
        assert [o["name"] for o in np_command.get("options", [])] == ["member"]
        # Presence is on by default: the portal's switches are on, so both intents are asked.
        assert stack.discord.intents is not None
        presence = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES
        assert stack.discord.intents & presence == presence
        async with stack.http.get(f"{stack.web_base}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {
                "status": "ok",
                "database": True,
                "gateway": True,
                "spotify": "ok",
                "presence": True,
            }


# --- /link through the browser -------------------------------------------------------------


async def test_link_through_the_browser(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert "direct messages" in reply.content
        dm = await stack.discord.wait_for_dm(ALICE_ID)
        assert "Connect your Spotify account" in dm.content
        found = buttons(dm)
        assert found["Link Spotify"]["style"] == 5
        authorize_url = found["Link Spotify"]["url"]
        assert authorize_url.startswith(stack.spotify.accounts_base + "/authorize?")
        assert found[PASTE_LABEL]["custom_id"] == PASTE_BUTTON_ID

        assert query_of(authorize_url)["show_dialog"] == "true"

        stack.spotify.approve_as("alice")
        callback_url = await redirect_location(stack, authorize_url)
        status, final_url, body = await stack.follow(callback_url)
        assert status == 200, body
        # The browser ends on a result page without the code and state in its address.
        assert final_url.startswith(f"{stack.web_base}/callback/done/")
        assert "?" not in final_url
        assert "Linked as Alice" in body
        assert "linked to the Discord account Alice (@alice)" in body
        assert "https://www.spotify.com/account/apps/" in body
        linked = await wait_dm(stack, ALICE_ID, "Linked as")
        assert linked.content.startswith("Linked as **Alice**")
        link = await stack.app.services.links.current_link(ALICE_ID)
        assert link is not None
        assert link.display_name == "Alice"

        # A reload of the callback address, and of the result page: no name, no new success,
        # nothing sent again.
        status, _, body = await stack.follow(callback_url)
        assert status == 200
        assert "already used" in body
        assert "Alice" not in body
        status, _, body = await stack.follow(final_url)
        assert status == 200
        assert "Alice" not in body
        assert "Linked as" not in body
        await asyncio.sleep(0.05)
        assert len([m for m in stack.discord.dms_to(ALICE_ID) if "Linked as" in m.content]) == 1
        assert stack.spotify.call_count("token") == 1


async def test_a_cancelled_consent_links_nothing(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        url = authorize_url_of((await link_dm(stack, ALICE_ID)).components)
        stack.spotify.deny_next()
        status, _, body = await stack.follow(url)
        assert status == 403
        assert "cancelled" in body
        assert await stack.app.services.storage.links.get_link(ALICE_ID) is None


# --- /link through the paste modal ---------------------------------------------------------


async def test_link_by_pasting_the_redirected_address(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        dm = await link_dm(stack, ALICE_ID)
        stack.spotify.approve_as("alice")
        location = await redirect_location(stack, authorize_url_of(dm.components))
        assert location.startswith(stack.settings.spotify_redirect_uri + "?")

        answer = await paste(stack, dm, ALICE_ID, f"  {location}\n")
        assert answer.content.startswith("Linked as **Alice**")
        assert (await stack.app.services.links.current_link(ALICE_ID)) is not None
        # The modal said it: no second "linked" DM.
        await asyncio.sleep(0.05)
        assert [m.content for m in stack.discord.dms_to(ALICE_ID)] == [dm.content]

        # The member opens the address in a browser afterwards anyway: already used, no name.
        status, _, body = await stack.follow(location)
        assert status == 200
        assert "already finished linking" in body
        assert "Alice" not in body


async def test_link_by_pasting_only_the_query(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        dm = await link_dm(stack, BOB_ID)
        stack.spotify.approve_as("bob")
        location = await redirect_location(stack, authorize_url_of(dm.components))
        bare_query = location.split("?", 1)[1]
        answer = await paste(stack, dm, BOB_ID, bare_query)
        assert answer.content.startswith("Linked as **Bob**")
        # Pasting the same again says it is done rather than failing.
        again = await paste(stack, dm, BOB_ID, "?" + bare_query)
        assert "already finished linking" in again.content
        assert stack.spotify.call_count("token") == 1
        assert len(stack.discord.dms_to(BOB_ID)) == 1


async def test_pasting_nonsense_explains_and_keeps_the_link_usable(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        dm = await link_dm(stack, ALICE_ID)
        stack.spotify.approve_as("alice")
        location = await redirect_location(stack, authorize_url_of(dm.components))
        answer = await paste(stack, dm, ALICE_ID, "the page did not load")
        assert "incomplete" in answer.content
        state = query_of(location)["state"]
        answer = await paste(
            stack, dm, ALICE_ID, f"{stack.settings.spotify_redirect_uri}?state={state}"
        )
        assert "incomplete" in answer.content
        answer = await paste(stack, dm, ALICE_ID, location)
        assert answer.content.startswith("Linked as **Alice**")


async def test_a_link_pasted_by_another_member_is_refused(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        alice_dm = await link_dm(stack, ALICE_ID)
        stack.spotify.approve_as("alice")
        alice_location = await redirect_location(stack, authorize_url_of(alice_dm.components))
        bob_dm = await link_dm(stack, BOB_ID)

        refused = await paste(stack, bob_dm, BOB_ID, alice_location)
        assert "belongs to someone else" in refused.content
        assert "Alice" not in refused.content
        assert await stack.app.services.storage.links.get_link(BOB_ID) is None
        assert stack.spotify.call_count("token") == 0

        # Alice's link was not used up by Bob's attempt.
        answer = await paste(stack, alice_dm, ALICE_ID, alice_location)
        assert answer.content.startswith("Linked as **Alice**")


async def test_dms_closed_the_reply_carries_both_buttons(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        stack.discord.dms_closed = True
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert "couldn't send you a direct message" in reply.content
        found = buttons(reply)
        assert found["Link Spotify"]["url"].startswith(stack.spotify.accounts_base)
        assert found[PASTE_LABEL]["custom_id"] == PASTE_BUTTON_ID
        assert stack.discord.dms_to(ALICE_ID) == []

        stack.spotify.approve_as("alice")
        location = await redirect_location(stack, found["Link Spotify"]["url"])
        answer = await paste(stack, reply, ALICE_ID, location)
        assert answer.content.startswith("Linked as **Alice**")


async def test_dms_closed_browser_link_still_works(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        stack.discord.dms_closed = True
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply()
        stack.spotify.approve_as("alice")
        status, _, body = await stack.follow(authorize_url_of(reply.components))
        assert status == 200
        assert "Linked as Alice" in body  # the failed "linked" DM does not spoil the page
        assert await stack.app.services.links.current_link(ALICE_ID) is not None


# --- relinking and unlinking ---------------------------------------------------------------


async def test_link_when_already_linked_names_the_account_and_relinking_replaces_it(
    tmp_path: Path,
) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply()
        assert "You are linked as **Alice** now" in reply.content
        dms = stack.discord.dms_to(ALICE_ID)
        url = authorize_url_of(dms[-1].components)

        stack.spotify.approve_as("carol")
        status, _, body = await stack.follow(url)
        assert status == 200
        assert "Linked as Carol" in body
        link = await stack.app.services.links.current_link(ALICE_ID)
        assert link is not None
        assert (link.spotify_user_id, link.display_name) == ("carol", "Carol")

        stack.spotify.set_playing("carol", track_payload("c1", "Carol's Song", 180_000, 1_000))
        stack.spotify.set_playing("alice", track_payload("a1", "Alice's Song", 180_000, 1_000))
        reply = await np_reply(stack, ALICE_ID)
        assert reply.embeds[0]["title"] == "Carol's Song"


async def test_unlink(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        sent = await stack.discord.send_slash_command("unlink", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert reply.content.startswith("Done")
        assert await stack.app.services.storage.links.get_link(ALICE_ID) is None

        stack.spotify.reset_calls()
        reply = await np_reply(stack, ALICE_ID)
        assert reply.ephemeral
        assert "/link" in reply.content
        assert reply.embeds == []
        assert stack.spotify.call_count("currently_playing") == 0  # the cached token is gone

        sent = await stack.discord.send_slash_command("unlink", {}, user_id=str(ALICE_ID))
        reply = await sent.wait_for_reply()
        assert reply.ephemeral
        assert "nothing to unlink" in reply.content


# --- /np -----------------------------------------------------------------------------------


async def test_np_shows_the_track(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing(
            "alice",
            track_payload(
                "t1",
                "Song One",
                200_000,
                65_000,
                artists=("First Artist", "Second Artist"),
                album="The Album",
            ),
        )
        stack.spotify.reset_calls()
        sent, reply = await np_answer(stack, ALICE_ID)
        assert not reply.ephemeral
        embed = reply.embeds[0]
        assert embed["title"] == "Song One"
        assert embed["url"] == "https://open.spotify.com/track/t1"
        assert embed["author"]["name"] == "Alice is listening to"
        assert "1:05 / 3:20" in embed["description"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert "[First Artist](https://open.spotify.com/artist/artist-0-t1)" in fields["Artists"]
        assert "[Second Artist](https://open.spotify.com/artist/artist-1-t1)" in fields["Artists"]
        assert fields["Album"] == "[The Album](https://open.spotify.com/album/album-t1)"
        assert embed["thumbnail"]["url"] == "https://i.scdn.co/image/album-t1-640"
        assert "Spotify" in embed["footer"]["text"]
        open_button = buttons(reply)["Open in Spotify"]
        assert (open_button["style"], open_button["url"]) == (
            5,
            "https://open.spotify.com/track/t1",
        )
        # A warm token: one Spotify call, no refresh, an answer without a defer.
        assert stack.spotify.call_count("currently_playing") == 1
        assert stack.spotify.call_count("token") == 0
        assert sent.callback is not None
        assert sent.callback.type == 4


async def test_np_paused_episode(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing(
            "alice",
            episode_payload("e1", "Episode 7", 3 * 3_600_000, 61_000, is_playing=False),
        )
        embed = (await np_reply(stack, ALICE_ID)).embeds[0]
        assert embed["title"] == "Episode 7"
        assert embed["author"]["name"] == "Alice was listening to"
        assert "Paused" in embed["description"] or "paused" in embed["description"]
        assert "0:01:01 / 3:00:00" in embed["description"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert "Fake Show" in fields["Podcast"]
        assert fields["Publisher"] == "Fake Publisher"


async def test_np_nothing_playing_is_a_normal_answer(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", None)  # 204, empty body
        reply = await np_reply(stack, ALICE_ID)
        assert not reply.ephemeral
        assert "not playing anything" in reply.embeds[0]["description"]


async def test_np_for_another_member(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t2", "Shared Song", 100_000, 10_000))
        reply = await np_reply(stack, BOB_ID, ALICE_ID)
        assert not reply.ephemeral
        assert reply.embeds[0]["title"] == "Shared Song"
        assert reply.embeds[0]["author"]["name"] == "Alice is listening to"

        reply = await np_reply(stack, ALICE_ID, CAROL_ID)
        assert reply.ephemeral
        assert reply.embeds == []
        assert reply.content == (
            "Carol has not linked a Spotify account, so I can't show what they are playing. "
            "They can run /link to connect one."
        )


async def test_np_for_another_member_whose_link_broke_reveals_nothing_more(
    tmp_path: Path,
) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(CAROL_ID, "carol")
        stack.spotify.revoke("carol", access_tokens=True)
        reply = await np_reply(stack, ALICE_ID, CAROL_ID)
        assert reply.ephemeral
        assert reply.content.startswith("Carol has not linked a Spotify account")
        assert "revoked" not in reply.content


async def test_np_for_an_unlinked_self(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        reply = await np_reply(stack, BOB_ID)
        assert reply.ephemeral
        assert "Run /link" in reply.content
        assert stack.spotify.call_count("currently_playing") == 0


async def test_np_refreshes_an_expired_token_once(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t3", "After Refresh", 100_000, 0))
        assert stack.spotify.expire_access_tokens("alice") == 1
        stack.spotify.reset_calls()
        reply = await np_reply(stack, ALICE_ID)
        assert reply.embeds[0]["title"] == "After Refresh"
        assert stack.spotify.call_count("token", "alice") == 1
        assert stack.spotify.call_count("currently_playing", "alice") == 2  # 401, then retried
        reply = await np_reply(stack, ALICE_ID)
        assert reply.embeds[0]["title"] == "After Refresh"
        assert stack.spotify.call_count("token", "alice") == 1


async def test_np_after_the_member_revoked_access(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.revoke("alice", access_tokens=True)
        reply = await np_reply(stack, ALICE_ID)
        assert reply.ephemeral
        assert "run /link again" in reply.content
        link = await stack.app.services.storage.links.get_link(ALICE_ID)
        assert link is not None
        assert (link.status, link.refresh_token) == ("broken", None)

        # Broken stays broken without asking Spotify again; /link starts over.
        stack.spotify.reset_calls()
        reply = await np_reply(stack, ALICE_ID)
        assert "run /link again" in reply.content
        assert stack.spotify.call_count("token") == 0
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        assert "You are linked as" not in (await sent.wait_for_reply()).content
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t4", "Back Again", 100_000, 0))
        assert (await np_reply(stack, ALICE_ID)).embeds[0]["title"] == "Back Again"


async def test_np_rate_limited_answers_at_once(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t5", "Song", 100_000, 0))
        stack.spotify.fail_next("currently_playing", 429, retry_after=42)
        sent, reply = await np_answer(stack, ALICE_ID)
        assert reply.ephemeral
        assert reply.content == "Spotify asks us to wait, try again in 42 s."
        assert sent.callback_latency < 0.5
        # The hold is app-wide: the next /np does not knock on Spotify's door again.
        sent, reply = await np_answer(stack, BOB_ID, ALICE_ID)
        assert reply.content.startswith("Spotify asks us to wait, try again in 4")
        assert sent.callback_latency < 0.5
        assert stack.spotify.call_count("currently_playing") == 1


async def test_np_not_on_the_allow_list(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.fail_next("currently_playing", 403, body=NOT_REGISTERED_TEXT)
        reply = await np_reply(stack, ALICE_ID)
        assert reply.ephemeral
        assert "allow-list" in reply.content
        assert "5 users" in reply.content
        assert stack.spotify.call_count("currently_playing") == 1  # permanent: not retried


async def test_np_when_spotify_is_slow_defers_then_answers(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t6", "Slow Song", 100_000, 0))
        stack.spotify.delay_next("currently_playing", 2.0)
        sent = await stack.np(ALICE_ID)
        callback = await sent.wait_for_callback(timeout=3)
        assert callback.type == 5  # "thinking", inside Discord's 3 s
        assert sent.callback_latency < 2.5
        reply = await sent.wait_for_reply(timeout=5)
        assert reply.embeds[0]["title"] == "Slow Song"
        assert not reply.ephemeral


async def test_np_when_spotify_is_down(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.fail_next("currently_playing", 503, times=5)
        sent = await stack.np(ALICE_ID)
        reply = await sent.wait_for_reply(timeout=8)
        assert "not answering" in reply.content
        assert sent.callback_latency < 3
        assert stack.spotify.call_count("currently_playing") == 3  # bounded retries


# --- bugs of our own -----------------------------------------------------------------------


async def test_an_unexpected_error_gets_an_apology_and_a_logged_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Stack.running(tmp_path) as stack:
        dm = await link_dm(stack, ALICE_ID)
        # The database goes away under the running bot: every command that needs it fails
        # with an error no command expects.
        await stack.app.services.storage.close()
        with caplog.at_level(logging.ERROR, logger="bot"):
            sent = await stack.discord.send_slash_command("unlink", {}, user_id=str(ALICE_ID))
            reply = await sent.wait_for_reply()
            assert reply.ephemeral
            assert reply.content.startswith("Sorry, something went wrong on our side.")
            assert "Storage is closed" not in reply.content

            answer = await paste(stack, dm, ALICE_ID, "code=a&state=b")
            assert answer.content.startswith("Sorry, something went wrong on our side.")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("unlink" in r.getMessage() for r in errors)
        assert all(r.exc_info is not None for r in errors)
        assert "Storage is closed" in caplog.text
        assert "Traceback" in caplog.text
        async with stack.http.get(f"{stack.web_base}/healthz") as response:
            assert response.status == 503
            assert (await response.json())["database"] is False


# --- shutdown ------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    # Only used once the server is gone: a probe racing a live server's shutdown could leave
    # an accepted socket behind and fail the test with a warning that is not the bot's.
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_clean_shutdown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Stack.running(tmp_path) as stack:
            await stack.link(ALICE_ID, "alice")
            stack.spotify.set_playing("alice", track_payload("t7", "Last Song", 100_000, 0))
            await np_reply(stack, ALICE_ID)
            app = stack.app
            port = app.web_port
            async with stack.http.get(f"{stack.web_base}/healthz") as response:
                assert response.status == 200
        assert app.bot.is_closed()
        assert app.services.storage.closed
        assert not _port_open(port)
        gc.collect()
        await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert [t.get_name() for t in leftovers if not t.done()] == []
    relevant = [w for w in caught if "audioop" not in str(w.message)]
    assert relevant == [], [str(w.message) for w in relevant]
    assert "Unclosed" not in caplog.text
    assert "Task was destroyed" not in caplog.text


async def test_sigterm_stops_the_bot_cleanly(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Stack.running(tmp_path) as stack:
            previous = signal.getsignal(signal.SIGTERM)
            runner = asyncio.create_task(stack.app.run_until_stopped())
            try:
                # run_until_stopped installs its handlers before its first await; never send
                # the signal unless they are in place (the default action ends the test run).
                await asyncio.sleep(0)
                assert signal.getsignal(signal.SIGTERM) is not previous
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.wait_for(runner, 5)
            finally:
                if not runner.done():
                    runner.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await runner
            assert signal.getsignal(signal.SIGTERM) is previous
            app: Application = stack.app
        assert app.bot.is_closed()
        assert app.services.storage.closed
        gc.collect()
    relevant = [w for w in caught if "audioop" not in str(w.message)]
    assert relevant == [], [str(w.message) for w in relevant]


async def test_link_messages_keep_no_view_of_their_own(tmp_path: Path) -> None:
    # One persistent "Paste the link" handler serves every /link message, also after a
    # restart; a view kept per message (they never time out) would pile up with each /link.
    async with Stack.running(tmp_path) as stack:
        assert len(stack.app.bot.persistent_views) == 1
        dms = [await link_dm(stack, member) for member in (ALICE_ID, CAROL_ID, ADMIN_ID)]
        again = await stack.discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        reused = await again.wait_for_reply()  # inside the cooldown: the same link again
        assert authorize_url_of(reused.components) == authorize_url_of(dms[0].components)
        stack.discord.dms_closed = True
        sent = await stack.discord.send_slash_command("link", {}, user_id=str(BOB_ID))
        ephemeral = await sent.wait_for_reply()
        assert len(stack.app.bot.persistent_views) == 1

        # The button still works on every one of those messages.
        stack.spotify.approve_as("alice")
        location = await redirect_location(stack, authorize_url_of(dms[0].components))
        answer = await paste(stack, dms[-1], ALICE_ID, location)
        assert answer.content.startswith("Linked as **Alice**")
        stack.spotify.approve_as("bob")
        location = await redirect_location(stack, authorize_url_of(ephemeral.components))
        answer = await paste(stack, ephemeral, BOB_ID, location)
        assert answer.content.startswith("Linked as **Bob**")


async def test_np_reminds_privately_when_the_link_runs_out_soon(tmp_path: Path) -> None:
    import dataclasses

    from tests.fakes.spotify import track_payload as payload

    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", payload("t1", "Song", 200_000, 10_000))
        fresh = await stack.np(ALICE_ID)
        await fresh.wait_for_reply()
        await stack.commands_finished()  # its reminder check read the fresh link

        storage = stack.app.services.storage
        link = await storage.links.get_link(ALICE_ID)
        assert link is not None
        await storage.links.save_link(
            dataclasses.replace(link, linked_at=time.time() - 175 * 86400)
        )
        old = await stack.np(ALICE_ID)
        reply = await old.wait_for_reply()
        assert reply.embeds[0]["title"] == "Song"
        reminder = await old.wait_for_followup(0)
        assert reminder.ephemeral
        assert "Spotify ends your link in 7 days" in reminder.content
        assert not fresh.followups  # a fresh link gets no reminder


async def test_shutdown_lets_a_running_command_answer(tmp_path: Path) -> None:
    from tests.fakes.spotify import track_payload as payload

    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", payload("t1", "Late Song", 200_000, 10_000))
        stack.spotify.delay_next("currently_playing", 0.5)
        before = stack.spotify.call_count("currently_playing", "alice")
        sent = await stack.np(ALICE_ID)
        # The command now waits for the slow answer (counted by the fake on arrival).
        await eventually(lambda: stack.spotify.call_count("currently_playing", "alice") > before)
        await stack.app.close()  # SIGTERM arrives while /np waits for Spotify
        reply = await sent.wait_for_reply(timeout=5)
        assert reply.embeds[0]["title"] == "Late Song"


async def test_np_error_after_a_defer_stays_private(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        await stack.link(ALICE_ID, "alice")
        # Slow, then a plain-text 403: the answer comes after the public "thinking" message.
        stack.spotify.fail_next("currently_playing", 403, delay=2.0)
        sent = await stack.np(ALICE_ID)
        callback = await sent.wait_for_callback(timeout=3)
        assert callback.type == 5
        error = await sent.wait_for_followup(0, timeout=5)
        assert error.ephemeral
        assert "allow-list" in error.content
        assert sent.original is not None
        assert sent.original.deleted  # nobody else sees a stuck or failed "thinking" message
