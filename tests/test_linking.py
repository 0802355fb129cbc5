"""LinkService: the one code path of the web callback and the paste modal.

Real Storage on tmp_path, real TokenCipher, real Spotify clients against the fake Spotify on
loopback; only the LinkService clock is a fake (state expiry).
"""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.linking import MAX_PASTE_LENGTH, LinkFailure, parse_pasted_address
from bot.storage import Storage
from tests.fakes.spotify import (
    DEFAULT_CLIENT_ID,
    DEFAULT_REDIRECT_URI,
    FakeSpotify,
)
from tests.helpers import ALICE, BOB, LinkWorld, query_of


@pytest.fixture
async def world(fake: FakeSpotify, tmp_path: Path) -> AsyncIterator[LinkWorld]:
    db_path = tmp_path / "bot.db"
    async with aiohttp.ClientSession() as session, await Storage.open(db_path) as storage:
        yield LinkWorld(fake, storage, session, db_path)


# --- parse_pasted_address ------------------------------------------------------------------

EXPECTED = {"code": "AQB-code_1", "state": "s7at3-_x"}


@pytest.mark.parametrize(
    "pasted",
    [
        "http://127.0.0.1:8080/callback?code=AQB-code_1&state=s7at3-_x",
        "https://np.example.org/callback?state=s7at3-_x&code=AQB-code_1",
        "/callback?code=AQB-code_1&state=s7at3-_x",
        "127.0.0.1:8080/callback?code=AQB-code_1&state=s7at3-_x",
        "code=AQB-code_1&state=s7at3-_x",
        "?code=AQB-code_1&state=s7at3-_x",
        "  http://127.0.0.1:8080/callback?code=AQB-code_1&state=s7at3-_x \n",
        "<http://127.0.0.1:8080/callback?code=AQB-code_1&state=s7at3-_x>",
        " < code=AQB-code_1&state=s7at3-_x > ",
        "http://127.0.0.1:8080/callback?code=AQB-code_1&state=s7at3-_x#_=_",
        "code=AQB-code_1&state=s7at3-_x#fragment?code=other&state=other",
        "http://127.0.0.1:8080/callback?code=AQB-code_1&state=s7at3-_x&empty=",
    ],
)
def test_parse_pasted_address_accepts_what_members_copy(pasted: str) -> None:
    assert parse_pasted_address(pasted) == EXPECTED


def test_parse_pasted_address_decodes_percent_escapes() -> None:
    parsed = parse_pasted_address("/callback?error=access_denied&state=a%2Db%5F")
    assert parsed == {"error": "access_denied", "state": "a-b_"}


@pytest.mark.parametrize("pasted", ["", "   ", "<>", "http://127.0.0.1:8080/callback", "hello"])
def test_parse_pasted_address_without_a_query(pasted: str) -> None:
    assert "state" not in parse_pasted_address(pasted)
    assert "code" not in parse_pasted_address(pasted)


def test_parse_pasted_address_refuses_over_long_input() -> None:
    base = "http://127.0.0.1:8080/callback?code=AQB-code_1&state=s7at3-_x&pad="
    fits = base + "x" * (MAX_PASTE_LENGTH - len(base))
    assert parse_pasted_address(fits)["state"] == "s7at3-_x"
    assert parse_pasted_address(fits + "x") == {}
    assert parse_pasted_address("code=a&state=b&" + "x=y&" * 100_000) == {}


# --- the state -----------------------------------------------------------------------------


async def test_state_has_at_least_128_random_bits_and_is_in_the_authorize_url(
    world: LinkWorld,
) -> None:
    urls = [await world.links.start(ALICE) for _ in range(50)]
    states = [query_of(url)["state"] for url in urls]
    assert len(set(states)) == len(states)
    for url, state in zip(urls, states, strict=True):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", state), state
        assert len(state) * 6 >= 128  # base64url: 6 bits a character
        query = query_of(url)
        assert query["client_id"] == DEFAULT_CLIENT_ID
        assert query["redirect_uri"] == DEFAULT_REDIRECT_URI
        assert query["response_type"] == "code"
    # The characters look random: no position is (nearly) constant across 50 states, and
    # the pool of characters has close to 6 bits of Shannon entropy.
    length = min(len(s) for s in states)
    for position in range(length):
        assert len({s[position] for s in states}) > 10
    counts = Counter("".join(states))
    total = sum(counts.values())
    entropy = -sum(n / total * math.log2(n / total) for n in counts.values())
    assert entropy > 5.5


async def test_only_a_hash_of_the_state_is_stored(world: LinkWorld) -> None:
    state = query_of(await world.links.start(ALICE))["state"]
    assert state.encode() not in world.database_bytes()


async def test_state_is_single_use(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    first = await world.links.complete(query)
    assert (first.discord_user_id, first.display_name, first.already_linked) == (
        ALICE,
        "Alice",
        False,
    )
    assert world.fake.call_count("token") == 1
    # The same state again (a reload, or the modal after the browser): no second exchange.
    again = await world.links.complete(query)
    assert again.already_linked
    assert again.display_name == "Alice"
    assert world.fake.call_count("token") == 1


async def test_a_used_state_without_a_link_is_refused(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    world.fake.fail_next("token", 400, body={"error": "invalid_grant", "error_description": "x"})
    with pytest.raises(LinkFailure) as first:
        await world.links.complete(query)
    assert first.value.kind == "exchange_failed"
    with pytest.raises(LinkFailure) as second:
        await world.links.complete(query)
    assert second.value.kind == "used_state"
    assert second.value.status == 410
    assert await world.storage.get_link(ALICE) is None


async def test_state_expires_after_ten_minutes(world: LinkWorld) -> None:
    early = await world.approved_query(ALICE)
    late = await world.approved_query(BOB, "bob")
    world.clock.advance(599)
    assert (await world.links.complete(early)).display_name == "Alice"
    world.clock.advance(2)  # 601 s after start
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(late)
    assert caught.value.kind == "expired_state"
    assert "10 minutes" in caught.value.message
    assert "/link" in caught.value.message
    assert await world.storage.get_link(BOB) is None
    assert world.fake.call_count("token") == 1  # the expired one never reached Spotify


async def test_unknown_state(world: LinkWorld) -> None:
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete({"code": "whatever", "state": "not-a-state"})
    assert caught.value.kind == "unknown_state"
    assert world.fake.call_count("token") == 0


async def test_a_state_pasted_by_another_member_is_refused_without_using_it(
    world: LinkWorld,
) -> None:
    query = await world.approved_query(ALICE)
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(query, pasted_by=BOB)
    assert caught.value.kind == "wrong_member"
    assert caught.value.status == 403
    assert world.fake.call_count("token") == 0
    assert await world.storage.get_link(BOB) is None
    # The owner can still finish with it.
    result = await world.links.complete(query, pasted_by=ALICE)
    assert (result.discord_user_id, result.already_linked) == (ALICE, False)
    assert await world.storage.get_link(ALICE) is not None


async def test_a_used_state_pasted_by_another_member_reveals_nothing(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    await world.links.complete(query)
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(query, pasted_by=BOB)
    assert caught.value.kind == "wrong_member"
    assert "Alice" not in caught.value.message


async def test_a_paste_without_the_code_does_not_use_up_the_state(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete({"state": query["state"]}, pasted_by=ALICE)
    assert caught.value.kind == "missing"
    result = await world.links.complete(query, pasted_by=ALICE)
    assert not result.already_linked


async def test_denied_consent_stores_nothing(world: LinkWorld) -> None:
    world.fake.deny_next()
    query = query_of(await world.redirect_after_consent(await world.links.start(ALICE)))
    assert query["error"] == "access_denied"
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(query)
    assert caught.value.kind == "denied"
    assert await world.storage.get_link(ALICE) is None


async def test_success_stores_the_refresh_token_encrypted(world: LinkWorld) -> None:
    await world.links.complete(await world.approved_query(ALICE))
    [refresh_token] = world.fake.refresh_tokens_of("alice")
    assert await world.stored_refresh_token(ALICE) == refresh_token
    assert refresh_token.encode() not in world.database_bytes()
    link = await world.links.current_link(ALICE)
    assert link is not None
    assert (link.spotify_account_id, link.spotify_user_id, link.display_name) == (
        "acct-alice",
        "alice",
        "Alice",
    )


async def test_listeners_hear_of_a_link_and_their_failure_does_not_undo_it(
    world: LinkWorld,
) -> None:
    heard: list[tuple[int, str, str]] = []

    async def listener(member: int, user: object, source: str) -> None:
        heard.append((member, getattr(user, "id", ""), source))
        raise RuntimeError("a listener bug")

    world.links.add_linked_listener(listener)
    await world.links.complete(await world.approved_query(ALICE))
    await world.links.complete(await world.approved_query(BOB, "bob"), pasted_by=BOB)
    assert heard == [(ALICE, "alice", "web"), (BOB, "bob", "paste")]
    assert await world.links.current_link(ALICE) is not None


# --- unlink --------------------------------------------------------------------------------


async def test_unlink(world: LinkWorld) -> None:
    assert await world.links.unlink(ALICE) is False
    await world.links.complete(await world.approved_query(ALICE))
    unlinked: list[int] = []
    world.links.add_unlinked_listener(unlinked.append)
    assert await world.links.unlink(ALICE) is True
    assert await world.storage.get_link(ALICE) is None
    assert await world.links.current_link(ALICE) is None
    assert await world.links.unlink(ALICE) is False
    assert unlinked == [ALICE, ALICE]


async def test_unlink_forgets_pending_states(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    await world.links.unlink(ALICE)
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(query)
    assert caught.value.kind == "unknown_state"


def test_database_bytes_reads_sqlite(tmp_path: Path) -> None:
    # The helper above must see what SQLite writes, or the "not stored" asserts prove nothing.
    path = tmp_path / "probe.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE t (v BLOB)")
        connection.execute("INSERT INTO t VALUES (?)", (b"needle-1234",))
        connection.commit()
    world = LinkWorld.__new__(LinkWorld)
    world.db_path = path
    assert b"needle-1234" in world.database_bytes()


def test_expiry_reminder_only_in_the_last_two_weeks() -> None:
    from bot.linking import expiry_reminder

    day = 86400.0
    linked = 1_000_000.0
    assert expiry_reminder(linked, linked + 10 * day) is None
    assert expiry_reminder(linked, linked + 167 * day) is None
    soon = expiry_reminder(linked, linked + 170.5 * day)
    assert soon is not None
    assert "in 12 days" in soon
    assert "/link" in soon
    assert "in 2 days" in (expiry_reminder(linked, linked + 180.5 * day) or "")
    assert "within a day" in (expiry_reminder(linked, linked + 181.5 * day) or "")
    assert "within a day" in (expiry_reminder(linked, linked + 200 * day) or "")
