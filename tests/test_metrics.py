"""Prometheus metrics: the Metrics object itself, and /metrics on the whole bot (Stack)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics
from tests.fakes.spotify import track_payload
from tests.harness import ALICE_ID, CAROL_ID, Stack

FAMILIES = {
    "nowplaying_commands": "counter",
    "nowplaying_spotify_requests": "counter",
    "nowplaying_token_refreshes": "counter",
    "nowplaying_spotify_rate_limit_holds": "counter",
    "nowplaying_autopost_lag_seconds": "histogram",
    "nowplaying_autopost_posts": "counter",
    "nowplaying_autopost_skip_check_stretch": "gauge",
    "nowplaying_autopost_unseen_gaps": "counter",
    "nowplaying_spotify_requests_in_window": "gauge",
    "nowplaying_spotify_hold_seconds": "gauge",
    "nowplaying_linked_members": "gauge",
    "nowplaying_gateway_latency_seconds": "gauge",
    "nowplaying_spotify_daily_calls": "gauge",
    "nowplaying_spotify_daily_token_requests": "gauge",
    "nowplaying_spotify_daily_budget": "gauge",
    "nowplaying_spotify_daily_budget_learned": "gauge",
    "nowplaying_spotify_daily_polling_left": "gauge",
    "nowplaying_spotify_quota_hold_seconds": "gauge",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    families: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # prometheus_client's creation timestamps
            continue
        families[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


# --- the Metrics object ------------------------------------------------------------------------


def test_render_has_every_family_before_anything_happens() -> None:
    payload, content_type = Metrics().render()
    assert content_type.startswith("text/plain; version=")
    families, samples = parse(payload.decode())
    assert families == FAMILIES
    assert value(samples, "nowplaying_token_refreshes_total", outcome="invalid_grant") == 0
    assert value(samples, "nowplaying_autopost_posts_total", action="edited") == 0
    assert value(samples, "nowplaying_spotify_rate_limit_holds_total") == 0
    assert math.isnan(value(samples, "nowplaying_linked_members") or 0.0)
    assert math.isnan(value(samples, "nowplaying_gateway_latency_seconds") or 0.0)


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # would raise "Duplicated timeseries" if shared
    first.command_completed("np", "ok")
    _, samples = parse(second.render()[0].decode())
    assert value(samples, "nowplaying_commands_total", command="np", outcome="ok") is None
    assert REGISTRY.get_sample_value("nowplaying_commands_total") is None


def test_hooks_count_what_they_are_told() -> None:
    metrics = Metrics()
    metrics.spotify_response("currently_playing", "200")
    metrics.spotify_response("currently_playing", "429")
    metrics.spotify_response("token.refresh_token", "connection_error")
    metrics.token_refresh("ok")
    metrics.token_refresh("ok")
    metrics.observe_autopost_lag(4.2)
    metrics.observe_autopost_lag(-1.0)  # clocks disagree: counted as 0
    metrics.autopost_post("posted")
    metrics.set_linked_members(7)
    metrics.set_gateway_latency_source(lambda: 0.042)
    _, samples = parse(metrics.render()[0].decode())
    requests = "nowplaying_spotify_requests_total"
    assert value(samples, requests, endpoint="currently_playing", status="200") == 1
    assert value(samples, requests, endpoint="currently_playing", status="429") == 1
    assert value(samples, requests, endpoint="token.refresh_token", status="connection_error") == 1
    assert value(samples, "nowplaying_spotify_rate_limit_holds_total") == 1
    assert value(samples, "nowplaying_token_refreshes_total", outcome="ok") == 2
    assert value(samples, "nowplaying_autopost_lag_seconds_count") == 2
    assert value(samples, "nowplaying_autopost_lag_seconds_sum") == 4.2
    assert value(samples, "nowplaying_autopost_lag_seconds_bucket", le="0.5") == 1
    assert value(samples, "nowplaying_autopost_posts_total", action="posted") == 1
    assert value(samples, "nowplaying_linked_members") == 7
    assert value(samples, "nowplaying_gateway_latency_seconds") == 0.042


def test_a_failing_latency_source_does_not_break_the_scrape() -> None:
    metrics = Metrics()

    def broken() -> float:
        raise RuntimeError("no websocket")

    metrics.set_gateway_latency_source(broken)
    metrics.watch_autopost_stretch(broken)
    _, samples = parse(metrics.render()[0].decode())
    assert math.isnan(value(samples, "nowplaying_gateway_latency_seconds") or 0.0)
    assert math.isnan(value(samples, "nowplaying_autopost_skip_check_stretch") or 0.0)
    assert math.isnan(value(samples, "nowplaying_spotify_hold_seconds") or 0.0)  # no source


async def test_linked_members_are_recounted_on_events_not_on_scrapes() -> None:
    metrics = Metrics()
    counted: asyncio.Queue[int] = asyncio.Queue()
    stored = [3]

    async def count() -> int:
        counted.put_nowait(stored[0])
        return stored[0]

    def linked_members() -> float | None:
        return value(parse(metrics.render()[0].decode())[1], "nowplaying_linked_members")

    async with metrics.linked_members_refresher(count, interval=3600):
        assert await asyncio.wait_for(counted.get(), 5) == 3
        assert linked_members() == 3
        for _ in range(5):
            metrics.render()
        assert counted.empty()  # scrapes never count
        stored[0] = 2
        metrics.token_refresh("invalid_grant")  # a link just broke
        assert await asyncio.wait_for(counted.get(), 5) == 2
        assert linked_members() == 2
    metrics.mark_linked_members_stale()
    await asyncio.sleep(0)
    assert counted.empty()  # the refresher stopped with the block


# --- /metrics on the whole bot -----------------------------------------------------------------


async def scrape(stack: Stack) -> tuple[int, str, str]:
    async with stack.http.get(f"{stack.web_base}/metrics") as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def scrape_until(
    stack: Stack, condition: Callable[[Samples], bool], timeout: float = 5.0
) -> tuple[dict[str, str], Samples]:
    """Commands are counted when discord.py finishes them, just after the reply is sent."""
    async with asyncio.timeout(timeout):
        while True:
            status, _, text = await scrape(stack)
            assert status == 200
            families, samples = parse(text)
            if condition(samples):
                return families, samples
            await asyncio.sleep(0.02)


async def test_metrics_after_link_and_np(tmp_path: Path) -> None:
    async with Stack.running(
        tmp_path, env={"METRICS_ENABLED": "true", "SPOTIFY_DAILY_BUDGET": "600"}
    ) as stack:
        status, content_type, text = await scrape(stack)
        assert status == 200
        assert content_type.startswith("text/plain; version=")
        assert value(parse(text)[1], "nowplaying_linked_members") == 0

        await stack.link(ALICE_ID, "alice")
        stack.spotify.set_playing("alice", track_payload("t1", "Song One", 200_000, 65_000))
        await (await stack.np(ALICE_ID)).wait_for_reply()
        stack.spotify.expire_access_tokens("alice")  # 401, one refresh, one retry
        await (await stack.np(ALICE_ID)).wait_for_reply()
        await (await stack.np(CAROL_ID)).wait_for_reply()  # not linked: told to /link
        stack.spotify.fail_next("currently_playing", 429, retry_after=30)
        await (await stack.np(ALICE_ID)).wait_for_reply()  # "Spotify asks us to wait"

        commands = "nowplaying_commands_total"
        families, samples = await scrape_until(
            stack,
            lambda s: (
                value(s, commands, command="np", outcome="user_error") == 2
                and value(s, "nowplaying_linked_members") == 1
            ),
        )
        assert families == FAMILIES
        assert value(samples, commands, command="link", outcome="ok") == 1
        assert value(samples, commands, command="np", outcome="ok") == 2
        requests = "nowplaying_spotify_requests_total"
        assert value(samples, requests, endpoint="token.authorization_code", status="200") == 1
        assert value(samples, requests, endpoint="me", status="200") == 1
        assert value(samples, requests, endpoint="currently_playing", status="200") == 2
        assert value(samples, requests, endpoint="currently_playing", status="401") == 1
        assert value(samples, requests, endpoint="currently_playing", status="429") == 1
        assert value(samples, requests, endpoint="token.refresh_token", status="200") == 1
        assert value(samples, "nowplaying_token_refreshes_total", outcome="ok") == 1
        assert value(samples, "nowplaying_token_refreshes_total", outcome="error") == 0
        assert value(samples, "nowplaying_spotify_rate_limit_holds_total") == 1
        assert value(samples, "nowplaying_autopost_lag_seconds_count") == 0
        assert value(samples, "nowplaying_autopost_skip_check_stretch") == 1.0
        assert value(samples, "nowplaying_autopost_unseen_gaps_total") == 0
        # Sent attempts in the last 30 s: token x2, me, currently-playing x4 (the link's
        # token exchange included); the 429 asked for 30 s.
        assert (value(samples, "nowplaying_spotify_requests_in_window") or 0) >= 7
        assert 25 <= (value(samples, "nowplaying_spotify_hold_seconds") or 0) <= 30
        # The daily budget: Web API calls of the last 24 hours by purpose (the 401 and the 429
        # count: Spotify counts them too), token requests apart; an ordinary 429 is no quota.
        daily = "nowplaying_spotify_daily_calls"
        assert value(samples, daily, purpose="command") == 4
        assert value(samples, daily, purpose="linking") == 1
        assert value(samples, daily, purpose="poll") == 0
        assert value(samples, daily, purpose="recently_played") == 0
        # The exchange, the refresh, and the start-up check of the client id.
        assert value(samples, "nowplaying_spotify_daily_token_requests") == 3
        assert value(samples, "nowplaying_spotify_daily_budget") == 600
        assert value(samples, "nowplaying_spotify_daily_budget_learned") == 0
        assert value(samples, "nowplaying_spotify_daily_polling_left") == 600 - 90 - 5
        assert value(samples, "nowplaying_spotify_quota_hold_seconds") == 0
        latency = value(samples, "nowplaying_gateway_latency_seconds")
        assert latency is not None  # NaN/inf until the first heartbeat is acknowledged
        assert stack.app.services.metrics is not None


async def test_unlink_updates_linked_members(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env={"METRICS_ENABLED": "true"}) as stack:
        await stack.link(ALICE_ID, "alice")
        await scrape_until(stack, lambda s: value(s, "nowplaying_linked_members") == 1)
        sent = await stack.discord.send_slash_command("unlink", {}, user_id=str(ALICE_ID))
        await sent.wait_for_reply()
        await scrape_until(stack, lambda s: value(s, "nowplaying_linked_members") == 0)


async def test_refused_refresh_counts_invalid_grant_and_drops_the_member(tmp_path: Path) -> None:
    async with Stack.running(tmp_path, env={"METRICS_ENABLED": "true"}) as stack:
        await stack.link(ALICE_ID, "alice")
        await scrape_until(stack, lambda s: value(s, "nowplaying_linked_members") == 1)
        stack.spotify.revoke("alice", access_tokens=True)
        await (await stack.np(ALICE_ID)).wait_for_reply()  # "Your Spotify link stopped working"
        _, samples = await scrape_until(stack, lambda s: value(s, "nowplaying_linked_members") == 0)
        refreshes = "nowplaying_token_refreshes_total"
        assert value(samples, refreshes, outcome="invalid_grant") == 1
        assert value(samples, refreshes, outcome="ok") == 0
        await scrape_until(
            stack,
            lambda s: (
                value(s, "nowplaying_commands_total", command="np", outcome="user_error") == 1
            ),
        )


async def test_metrics_are_a_404_when_disabled(tmp_path: Path) -> None:
    async with Stack.running(tmp_path) as stack:
        status, content_type, text = await scrape(stack)
        assert status == 404
        assert content_type.startswith("text/html")
        assert "nowplaying_" not in text
        assert stack.app.services.metrics is None
