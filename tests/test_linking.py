"""LinkService: the one code path of the web callback and the paste modal.

Real Storage on tmp_path, real TokenCipher, real Spotify clients against the fake Spotify on
loopback; only the LinkService clock is a fake (state expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.linking.service import MAX_PASTE_LENGTH, LinkResult, parse_pasted_address
from bot.linking.words import LinkFailure, failure_words, linked_words
from bot.storage import Storage
from tests.fakes.spotify import (
    DEFAULT_CLIENT_ID,
    DEFAULT_REDIRECT_URI,
    FakeSpotify,
)
from tests.helpers import ALICE, BOB, LinkWorld, query_of
from tests.peek import count_link_states


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
    urls = [(await world.links.start(ALICE + index)).authorize_url for index in range(50)]
    states = [query_of(url)["state"] for url in urls]
    assert len(set(states)) == len(states)
    for url, state in zip(urls, states, strict=True):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", state), state
        assert len(state) * 6 >= 128  # base64url: 6 bits a character
        query = query_of(url)
        assert query["client_id"] == DEFAULT_CLIENT_ID
        assert query["redirect_uri"] == DEFAULT_REDIRECT_URI
        assert query["response_type"] == "code"
        assert query["show_dialog"] == "true"  # Spotify always shows whose account it is
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
    state = query_of((await world.links.start(ALICE)).authorize_url)["state"]
    assert state.encode() not in world.database_bytes()


async def test_state_is_single_use(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    first = await world.links.complete(query)
    assert (first.discord_user_id, first.display_name, first.outcome) == (ALICE, "Alice", "linked")
    assert world.fake.call_count("token") == 1
    # The same state again (a reload, or the modal after the browser): no second exchange, no
    # claim of a new success, no account named.
    with pytest.raises(LinkFailure) as again:
        await world.links.complete(query)
    assert (
        again.value.kind,
        failure_words(again.value).status,
        failure_words(again.value).tone,
    ) == ("used_state", 200, "info")
    assert "already finished linking" in failure_words(again.value).message
    assert "Alice" not in failure_words(again.value).message
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
    assert failure_words(second.value).status == 410
    assert await world.storage.links.get_link(ALICE) is None


async def test_state_expires_after_ten_minutes(world: LinkWorld) -> None:
    early = await world.approved_query(ALICE)
    late = await world.approved_query(BOB, "bob")
    world.clock.advance(599)
    assert (await world.links.complete(early)).display_name == "Alice"
    world.clock.advance(2)  # 601 s after start
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(late)
    assert caught.value.kind == "expired_state"
    assert "10 minutes" in failure_words(caught.value).message
    assert "/link" in failure_words(caught.value).message
    assert await world.storage.links.get_link(BOB) is None
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
    assert failure_words(caught.value).status == 403
    assert world.fake.call_count("token") == 0
    assert await world.storage.links.get_link(BOB) is None
    # The owner can still finish with it.
    result = await world.links.complete(query, pasted_by=ALICE)
    assert (result.discord_user_id, result.outcome) == (ALICE, "linked")
    assert await world.storage.links.get_link(ALICE) is not None


async def test_a_used_state_pasted_by_another_member_reveals_nothing(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    await world.links.complete(query)
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(query, pasted_by=BOB)
    assert caught.value.kind == "wrong_member"
    assert "Alice" not in failure_words(caught.value).message


async def test_a_paste_without_the_code_does_not_use_up_the_state(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete({"state": query["state"]}, pasted_by=ALICE)
    assert caught.value.kind == "missing"
    result = await world.links.complete(query, pasted_by=ALICE)
    assert result.outcome == "linked"


async def test_denied_consent_stores_nothing(world: LinkWorld) -> None:
    world.fake.deny_next()
    query = query_of(
        await world.redirect_after_consent((await world.links.start(ALICE)).authorize_url)
    )
    assert query["error"] == "access_denied"
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(query)
    assert caught.value.kind == "denied"
    assert await world.storage.links.get_link(ALICE) is None


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
    heard: list[int] = []
    told: list[tuple[int, str]] = []

    async def listener(member: int) -> None:
        heard.append(member)
        raise RuntimeError("a listener bug")

    async def notice(member: int, text: str) -> None:
        told.append((member, text))

    world.events.on("linked", listener)
    world.links.add_notice_listener(notice)
    await world.links.complete(await world.approved_query(ALICE))
    await world.links.complete(await world.approved_query(BOB, "bob"), pasted_by=BOB)
    world.clock.advance(31)  # past /link's cooldown: a new state
    await world.links.complete(await world.approved_query(ALICE))
    assert heard == [ALICE, BOB, ALICE]
    # The browser's links are told by DM; a pasted link is answered in the modal instead.
    assert told == [
        (ALICE, linked_words("Alice", "linked")),
        (ALICE, linked_words("Alice", "renewed")),
    ]
    assert await world.links.current_link(ALICE) is not None


# --- unlink --------------------------------------------------------------------------------


async def test_unlink(world: LinkWorld) -> None:
    assert await world.links.unlink(ALICE) is False
    await world.links.complete(await world.approved_query(ALICE))
    unlinked: list[int] = []
    world.events.on("unlinked", unlinked.append)
    assert await world.links.unlink(ALICE) is True
    assert await world.storage.links.get_link(ALICE) is None
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
    from bot.linking.words import expiry_reminder

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


# --- a Spotify account belongs to one member -----------------------------------------------


async def test_a_spotify_account_linked_to_another_member_is_never_moved(
    world: LinkWorld,
) -> None:
    await world.links.complete(await world.approved_query(ALICE, "alice"))
    alice_token = await world.stored_refresh_token(ALICE)
    # Alice sends her /link button to Bob; Bob approves as himself... with Alice's account.
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(await world.approved_query(BOB, "alice"))
    failure = caught.value
    assert (failure.kind, failure_words(failure).status) == ("taken", 409)
    assert "/unlink" in failure_words(failure).message
    assert str(ALICE) not in failure_words(failure).message
    assert "Alice" not in failure_words(failure).message + failure_words(failure).title
    assert await world.storage.links.get_link(BOB) is None  # no tokens of Alice's under Bob
    assert await world.stored_refresh_token(ALICE) == alice_token  # Alice's link untouched
    assert await world.storage.link_states.list_pending_links() == []


async def test_relinking_the_same_account_is_a_renewal(world: LinkWorld) -> None:
    await world.links.complete(await world.approved_query(ALICE, "alice"))
    world.clock.advance(31)
    renewal = await world.links.complete(await world.approved_query(ALICE, "alice"))
    assert (renewal.outcome, renewal.display_name) == ("renewed", "Alice")
    assert await world.stored_refresh_token(ALICE) == world.fake.refresh_tokens_of("alice")[-1]


# --- /link: cooldown and a bound on states -------------------------------------------------


async def test_link_again_within_the_cooldown_hands_out_the_same_link(world: LinkWorld) -> None:
    first = await world.links.start(ALICE, "Alice (@alice)")
    world.clock.advance(29)
    again = await world.links.start(ALICE, "Alice (@alice)")
    assert (again.reused, again.authorize_url) == (True, first.authorize_url)
    assert again.expires_at == first.expires_at
    assert await count_link_states(world.storage, ALICE) == 1
    world.clock.advance(2)
    later = await world.links.start(ALICE)
    assert not later.reused
    assert later.authorize_url != first.authorize_url


async def test_3000_links_in_a_row_leave_at_most_3_states(world: LinkWorld) -> None:
    oldest = await world.links.start(ALICE)
    for _ in range(2_999):
        world.clock.advance(31)  # each one past the cooldown: a new state every time
        await world.links.start(ALICE)
    assert await count_link_states(world.storage, ALICE) <= 3
    assert await count_link_states(world.storage) <= 3
    with pytest.raises(LinkFailure) as caught:  # the older states stopped working
        await world.links.complete({"code": "c", "state": query_of(oldest.authorize_url)["state"]})
    assert caught.value.kind == "unknown_state"


# --- concurrent tabs -----------------------------------------------------------------------


async def test_concurrent_tabs_of_one_callback_agree(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    world.fake.fail_next("me", None, delay=0.3)  # the first tab is still working...
    outcomes = await asyncio.gather(
        *(world.links.complete(query) for _ in range(4)), return_exceptions=True
    )
    linked = [o for o in outcomes if isinstance(o, LinkResult)]
    others = [o for o in outcomes if isinstance(o, LinkFailure)]
    assert [r.outcome for r in linked] == ["linked"]
    assert len(others) == 3
    for failure in others:  # ...the others wait for it and report the same outcome, unnamed
        assert (failure.kind, failure_words(failure).status, failure_words(failure).tone) == (
            "used_state",
            200,
            "info",
        )
        assert "Alice" not in failure_words(failure).message
    assert world.fake.call_count("token") == 1


# --- 429 holds -----------------------------------------------------------------------------


async def test_an_accounts_service_hold_uses_up_nothing(world: LinkWorld) -> None:
    query = await world.approved_query(ALICE)
    world.fake.fail_next("token", 429, retry_after=40)
    with pytest.raises(LinkFailure) as caught:
        await world.links.complete(query)
    assert (caught.value.kind, failure_words(caught.value).status) == ("rate_limited", 429)
    assert "reload this page in 40 s" in failure_words(caught.value).message
    # During the hold, a reload does not even reach Spotify, and still uses nothing up.
    world.monotonic.advance(10)
    with pytest.raises(LinkFailure) as held:
        await world.links.complete(query)
    assert "30 s" in failure_words(held.value).message
    assert world.fake.call_count("token") == 1
    world.monotonic.advance(31)
    result = await world.links.complete(query)  # the same address, once the hold is over
    assert result.outcome == "linked"


async def test_a_web_api_hold_keeps_the_grant_and_finishes_the_link_later(
    world: LinkWorld,
) -> None:
    linked = asyncio.Event()
    heard: list[int] = []
    told: list[str] = []

    async def listener(member: int) -> None:
        heard.append(member)
        linked.set()

    async def notice(member: int, text: str) -> None:
        told.append(text)

    world.events.on("linked", listener)
    world.links.add_notice_listener(notice)
    query = await world.approved_query(ALICE)
    world.fake.fail_next("me", 429, retry_after=3600)
    result = await world.links.complete(query)
    assert (result.outcome, result.retry_after) == ("pending", 3600)
    assert world.fake.call_count("token") == 1  # the code was exchanged at once
    assert await world.storage.links.get_link(ALICE) is None
    [pending] = await world.storage.link_states.list_pending_links()
    assert pending.discord_user_id == ALICE
    [refresh_token] = world.fake.refresh_tokens_of("alice")
    assert refresh_token.encode() not in world.database_bytes()  # kept encrypted
    # A reload says so, without a name and without claiming a success.
    with pytest.raises(LinkFailure) as reload:
        await world.links.complete(query)
    assert "finishes the link as soon as Spotify lets it" in failure_words(reload.value).message

    world.completer.start()
    try:
        world.monotonic.advance(3600)  # the hold is over
        world.completer.wake()
        await asyncio.wait_for(linked.wait(), 5)
    finally:
        await world.completer.stop()
    assert heard == [ALICE]
    assert told == [linked_words("Alice", "linked")]
    link = await world.links.current_link(ALICE)
    assert link is not None
    assert link.display_name == "Alice"
    assert await world.stored_refresh_token(ALICE) == refresh_token
    assert await world.storage.link_states.list_pending_links() == []
    assert await world.storage.link_states.link_state_outcome(query["state"]) == "linked"


async def test_a_link_waiting_for_a_hold_still_gets_the_ownership_check(
    world: LinkWorld,
) -> None:
    notices: list[tuple[int, str]] = []
    told = asyncio.Event()

    async def notice(member: int, text: str) -> None:
        notices.append((member, text))
        told.set()

    await world.links.complete(await world.approved_query(ALICE, "alice"))
    world.links.add_notice_listener(notice)  # Alice's own "linked" DM is not this test's
    world.fake.fail_next("me", 429, retry_after=60)
    result = await world.links.complete(await world.approved_query(BOB, "alice"))
    assert result.outcome == "pending"
    world.monotonic.advance(61)
    # A new completer, as after a restart: it finds the waiting link in the database.
    world.completer.start()
    try:
        await asyncio.wait_for(told.wait(), 5)
    finally:
        await world.completer.stop()
    [(member, text)] = notices
    assert member == BOB
    assert "linked to another Discord account" in text
    assert "/unlink" in text
    assert await world.storage.links.get_link(BOB) is None
    assert (await world.storage.links.get_link(ALICE)) is not None
    assert await world.storage.link_states.list_pending_links() == []


async def test_a_waiting_link_whose_access_was_revoked_is_dropped_with_a_notice(
    world: LinkWorld,
) -> None:
    told = asyncio.Event()
    notices: list[str] = []

    async def notice(member: int, text: str) -> None:
        notices.append(text)
        told.set()

    world.links.add_notice_listener(notice)
    world.fake.fail_next("me", 429, retry_after=60)
    await world.links.complete(await world.approved_query(ALICE))
    world.fake.revoke("alice")
    world.fake.expire_access_tokens("alice")
    world.monotonic.advance(61)
    world.completer.start()
    try:
        await asyncio.wait_for(told.wait(), 5)
    finally:
        await world.completer.stop()
    assert "run /link again" in notices[0]
    assert await world.storage.links.get_link(ALICE) is None
    assert await world.storage.link_states.list_pending_links() == []


async def test_a_newer_link_wins_over_one_still_waiting_for_spotify(world: LinkWorld) -> None:
    world.fake.fail_next("me", 429, retry_after=60)
    assert (await world.links.complete(await world.approved_query(ALICE, "bob"))).outcome == (
        "pending"
    )
    world.monotonic.advance(61)
    world.clock.advance(31)
    assert (await world.links.complete(await world.approved_query(ALICE, "alice"))).outcome == (
        "linked"
    )
    assert (
        await world.storage.link_states.list_pending_links() == []
    )  # the older one will not override
