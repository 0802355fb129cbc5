"""Try the bot without a Discord or Spotify account: ``python -m tests.demo`` (from a clone;
``bash scripts/try`` installs what it needs first).

The real bot runs against the test suite's fake Discord and fake Spotify on 127.0.0.1, in a
small simulated server: Bob and Carol listen with a Discord status, Alice links her Spotify
account through the real /link flow (the DM, the authorize page, the callback), the admin
picks a music channel. Then it prints what Discord received, message by message: /np, the
auto-posts, /listening, /chart; and writes them as a page (``demo-output/index.html``, the
chart beside it). Contributors run it to see a change; an admin, before creating any app.

``python -m tests.demo --fakes-only ENV_FILE`` starts only the two fakes and writes the
settings that point a bot at them (for the container smoke test of ``.ci/run``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.discord import ChannelArg, FakeDiscord, FakeMessage
from tests.fakes.discord_payloads import make_spotify_activity
from tests.fakes.spotify import FakeSpotify, track_object, track_payload
from tests.harness import (
    ADMIN_ID,
    ALICE_ID,
    BOB_ID,
    CAROL_ID,
    GENERAL_ID,
    GUILD_ID,
    KEY,
    MUSIC_ID,
    Stack,
    authorize_url_of,
    default_guild,
    fast_autopost,
)

WAIT = 15.0
NAMES = {ALICE_ID: "Alice", BOB_ID: "Bob", CAROL_ID: "Carol", ADMIN_ID: "the admin"}


def describe(message: FakeMessage) -> list[str]:
    """A Discord message as plain lines: its text, each embed, buttons and attachments."""
    lines = message.content.splitlines() if message.content else []
    for embed in message.embeds:
        if "author" in embed:
            lines.append(f"  [{embed['author'].get('name', '')}]")
        if "title" in embed:
            lines.append(f"  ** {embed['title']} **")
        if "description" in embed:
            lines.extend(f"  {line}" for line in embed["description"].splitlines())
        lines.extend(f"  {field['name']}: {field['value']}" for field in embed.get("fields", []))
        if "image" in embed:
            lines.append(f"  (picture: {embed['image']['url']})")
        if "footer" in embed:
            lines.append(f"  -- {embed['footer']['text']}")
    buttons = [c.get("label", "") for c in message.iter_components() if c.get("type") == 2]
    if buttons:
        lines.append("  buttons: " + " | ".join(f"[{label}]" for label in buttons))
    lines.extend(f"  attached: {a['filename']}" for a in message.attachments)
    return lines


class Show:
    """What Discord received, in the terminal as it happens, and as a page at the end."""

    def __init__(self, stack: Stack, output: Path) -> None:
        self.stack = stack
        self.output = output
        self.sections: list[tuple[str, FakeMessage]] = []

    def step(self, words: str) -> None:
        print(f"\n== {words}")

    def received(self, heading: str, message: FakeMessage) -> None:
        channels = {str(MUSIC_ID): "#music", str(GENERAL_ID): "#general"}
        if message.ephemeral:
            where = "only they see it"
        else:
            where = f"in {channels.get(message.channel_id, 'a direct message')}"
        print(f"-- {heading} ({where})")
        for line in describe(message):
            print(f"   {line}")
        self.sections.append((heading, message))

    def write_page(self) -> Path:
        self.output.mkdir(parents=True, exist_ok=True)
        cards = []
        for heading, message in self.sections:
            pictures = ""
            for attachment in message.attachments:
                name = Path(attachment["filename"]).name
                (self.output / name).write_bytes(self.stack.discord.attachment_bytes(attachment))
                pictures += f'<img src="{html.escape(name)}" alt="{html.escape(name)}">'
            colours = [embed.get("color") for embed in message.embeds if embed.get("color")]
            border = f"#{colours[0]:06x}" if colours else "#4e5058"
            text = html.escape("\n".join(describe(message)))
            cards.append(
                f'<section style="border-left:4px solid {border}"><h2>{html.escape(heading)}'
                f"</h2><pre>{text}</pre>{pictures}</section>"
            )
        page = self.output / "index.html"
        page.write_text(
            "<!doctype html><meta charset=utf-8><title>nowplaying-bot: what Discord received"
            "</title><style>body{font:15px sans-serif;background:#313338;color:#dbdee1;"
            "max-width:52em;margin:2em auto}section{background:#2b2d31;margin:1em 0;"
            "padding:.5em 1em}pre{white-space:pre-wrap}img{max-width:100%}</style>"
            "<h1>What Discord received</h1>" + "".join(cards),
            encoding="utf-8",
        )
        return page


async def reply_to(stack: Stack, user_id: int, name: str, **options: Any) -> FakeMessage:
    subcommand = options.pop("subcommand", None)
    sent = await stack.discord.send_slash_command(
        name, options, user_id=str(user_id), subcommand=subcommand
    )
    callback = await sent.wait_for_callback(timeout=WAIT)
    if callback.type == 5:  # "thinking" first, the answer as a follow-up
        return await sent.wait_for_followup(timeout=WAIT)
    return await sent.wait_for_reply(timeout=WAIT)


def one_track_after_another(*tracks: tuple[str, str, float]) -> Callable[[], dict[str, Any]]:
    """Alice's player: each (id, title, seconds) in turn from now; the last one goes on."""
    started = time.monotonic()

    def state() -> dict[str, Any]:
        elapsed = time.monotonic() - started
        for index, (track_id, title, seconds) in enumerate(tracks):
            if elapsed < seconds or index == len(tracks) - 1:
                return track_payload(
                    track_id,
                    title,
                    int(seconds * 1000),
                    int(elapsed * 1000),
                    artists=("The Fakes",),
                    album="Loopback",
                )
            elapsed -= seconds
        raise AssertionError("unreachable")

    return state


async def demo(folder: Path, output: Path) -> Path:
    print(
        "Starting nowplaying-bot against a fake Discord and a fake Spotify on 127.0.0.1 "
        "(nothing leaves this machine)..."
    )
    async with Stack.running(
        folder,
        env={"ENABLE_PRESENCE": "true", "LOG_LEVEL": "WARNING"},
        app_options={"autopost_config": fast_autopost(skip_check=1.0)},
    ) as stack:
        show = Show(stack, output)
        discord = stack.discord
        print(
            f"The bot is connected to the server 'Listening Club' (web server at "
            f"{stack.web_base}). Members: Alice, Bob, Carol and the admin; channels #general "
            "and #music."
        )

        show.step("Bob and Carol listen on Spotify; Discord shows it in their status")
        for user_id, title, track in ((BOB_ID, "Status Song", "b1"), (CAROL_ID, "Quiet", "c1")):
            activity = make_spotify_activity(
                title=title,
                artists=("Someone",),
                track_id=f"{track}{'0' * 20}",
                start_ms=int(time.time() * 1000) - 30_000,
            )
            await discord.update_presence(GUILD_ID, user_id, [activity])
        show.received(
            "Bob: /np (from his status, no Spotify call)", await reply_to(stack, BOB_ID, "np")
        )

        show.step("The admin picks the music channel for auto-posts")
        show.received(
            "the admin: /autopost channel #music",
            await reply_to(
                stack, ADMIN_ID, "autopost", subcommand="channel", channel=ChannelArg(str(MUSIC_ID))
            ),
        )

        show.step("Alice links her Spotify account (the real flow: /link, the DM, the browser)")
        stack.spotify.set_playing(
            "alice",
            one_track_after_another(("a1", "First Light", 6.0), ("a2", "Second Wind", 200.0)),
        )
        stack.spotify.set_top(
            "alice",
            "tracks",
            "short_term",
            [
                track_object(f"t{n}", f"Track {n}", album=f"Album {n}", album_id=f"al{n}")
                for n in range(12)
            ],
        )
        sent = await discord.send_slash_command("link", {}, user_id=str(ALICE_ID))
        show.received("Alice: /link", await sent.wait_for_reply(timeout=WAIT))
        dms = await discord.wait_for(lambda: discord.dms_to(str(ALICE_ID)) or None, timeout=WAIT)
        show.received("the DM Alice gets", dms[-1])
        stack.spotify.approve_as("alice")
        status, _, page = await stack.follow(authorize_url_of(dms[-1].components))
        print(f"-- Alice's browser: Spotify's consent, then the bot's page (HTTP {status})")
        linked = await discord.wait_for(
            lambda: [m for m in discord.dms_to(str(ALICE_ID)) if "Linked as" in m.content] or None,
            timeout=WAIT,
        )
        show.received("the DM after linking", linked[-1])

        show.step("Alice asks what she is playing")
        show.received("Alice: /np", await reply_to(stack, ALICE_ID, "np"))

        show.step("The auto-poster follows Alice: a post in #music when her track changes")
        first = await discord.wait_for_message(
            MUSIC_ID, predicate=lambda m: bool(m.embeds), timeout=WAIT
        )
        show.received("auto-post in #music", first)
        second = await discord.wait_for_message(
            MUSIC_ID,
            predicate=lambda m: bool(m.embeds) and m.embeds[0].get("title") == "Second Wind",
            timeout=WAIT,
        )
        show.received("auto-post in #music (the next track)", second)

        show.step("Who is listening right now, and Alice's chart")
        show.received("the admin: /listening", await reply_to(stack, ADMIN_ID, "listening"))
        show.received("Alice: /chart", await reply_to(stack, ALICE_ID, "chart"))
        await stack.commands_finished()
        page_path = show.write_page()
    assert "Linked as" in page, page
    return page_path


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))


async def serve_fakes(env_file: Path, host: str) -> None:
    """The two fakes, until SIGTERM or SIGINT; ``env_file`` gets the settings for a bot."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with (
        FakeSpotify.running() as spotify,
        FakeDiscord.running(guilds=[default_guild()], host=host) as discord,
    ):
        spotify.redirect_uris.append("http://127.0.0.1:8080/callback")
        values = {
            "DISCORD_TOKEN": discord.token,
            "SPOTIFY_CLIENT_ID": spotify.client_id,
            "SPOTIFY_CLIENT_SECRET": spotify.client_secret,
            "SPOTIFY_REDIRECT_URI": "http://127.0.0.1:8080/callback",
            "TOKEN_ENCRYPTION_KEY": KEY,
            "DISCORD_API_BASE": discord.api_url,
            "SPOTIFY_ACCOUNTS_BASE": spotify.accounts_base,
            "SPOTIFY_API_BASE": spotify.api_base,
            "DEV_GUILD_ID": str(GUILD_ID),
        }
        write_env_file(env_file, values)
        print(f"fakes running; settings in {env_file}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.demo", description=__doc__)
    parser.add_argument("--output", default="demo-output", help="where the page is written")
    parser.add_argument("--fakes-only", metavar="ENV_FILE", help="start only the fakes")
    parser.add_argument("--host", default="127.0.0.1", help="--fakes-only: address to listen on")
    args = parser.parse_args(argv)
    if args.fakes_only:
        asyncio.run(serve_fakes(Path(args.fakes_only), args.host))
        return 0
    with tempfile.TemporaryDirectory(prefix="nowplaying-demo-") as folder:
        try:
            page = asyncio.run(demo(Path(folder), Path(args.output).absolute()))
        except KeyboardInterrupt:
            return 130
    print(f"\nThe same, as a page: {page}")
    print("That was the real bot; only Discord and Spotify were fakes.")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
