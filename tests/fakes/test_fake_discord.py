"""The fake Discord against a bare discord.py ``commands.Bot``: proof that it plays Discord."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord import (
    ChannelArg,
    FakeDiscord,
    OptionValue,
    UserArg,
    make_channel,
    make_custom_status,
    make_guild,
    make_member,
    make_spotify_activity,
    point_discord_py_at,
    run_client,
)
from tests.fakes.discord_payloads import EPHEMERAL, JSON

GUILD_ID = 900_000_000_000_000_001
GENERAL_ID = 900_000_000_000_000_011
MUSIC_ID = 900_000_000_000_000_012
ANN_ID = 800_000_000_000_000_001
BOB_ID = 800_000_000_000_000_002
WAIT = 5.0


def build_guild() -> JSON:
    return make_guild(
        GUILD_ID,
        "Listening Party",
        channels=[make_channel(GENERAL_ID, "general"), make_channel(MUSIC_ID, "music", position=1)],
        members=[make_member(id=ANN_ID, username="ann"), make_member(id=BOB_ID, username="bob")],
    )


class RenameModal(discord.ui.Modal, title="Rename"):
    name: discord.ui.TextInput[RenameModal] = discord.ui.TextInput(label="Playlist name")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"renamed to {self.name.value}", ephemeral=True)


class RenameView(discord.ui.View):
    @discord.ui.button(label="Rename", custom_id="rename")
    async def rename(
        self, interaction: discord.Interaction, button: discord.ui.Button[RenameView]
    ) -> None:
        await interaction.response.send_modal(RenameModal())

    @discord.ui.button(label="Refresh", custom_id="refresh")
    async def refresh(
        self, interaction: discord.Interaction, button: discord.ui.Button[RenameView]
    ) -> None:
        await interaction.response.edit_message(content="refreshed")


class SampleBot(commands.Bot):
    """The smallest bot that uses every feature of the fake."""

    def __init__(self, intents: discord.Intents) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            guild_ready_timeout=0.05,  # on_ready 50 ms after the last GUILD_CREATE, not 2 s
        )
        self.presence_updates: asyncio.Queue[tuple[discord.Member, discord.Member]] = (
            asyncio.Queue()
        )
        self.channel_deletes: asyncio.Queue[discord.abc.GuildChannel] = asyncio.Queue()
        self.channel_updates: asyncio.Queue[discord.abc.GuildChannel] = asyncio.Queue()
        guild = discord.Object(GUILD_ID)

        @self.tree.command(guild=guild, description="Echo options back")
        async def echo(
            interaction: discord.Interaction,
            text: str,
            member: discord.Member,
            channel: discord.TextChannel,
        ) -> None:
            reply = f"{text}|{member.display_name}|{channel.name}"
            await interaction.response.send_message(reply, ephemeral=True)

        @self.tree.command(description="Think, then answer")
        async def later(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send("done")

        @self.tree.command(guild=guild, description="DM the caller")
        async def dm(interaction: discord.Interaction) -> None:
            try:
                await interaction.user.send("hello from the bot")
            except discord.Forbidden as exc:
                await interaction.response.send_message(f"forbidden {exc.code}", ephemeral=True)
                return
            await interaction.response.send_message("sent", ephemeral=True)

        @self.tree.command(guild=guild, description="A button that opens a modal")
        async def form(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("press", view=RenameView())

        np = app_commands.Group(name="np", description="Now playing")

        @np.command(name="show", description="Show a member")
        async def show(
            interaction: discord.Interaction, member: discord.Member | None = None
        ) -> None:
            target = member or interaction.user
            await interaction.response.send_message(f"showing {target.id}")

        self.tree.add_command(np, guild=guild)

    async def setup_hook(self) -> None:
        await self.tree.sync(guild=discord.Object(GUILD_ID))
        await self.tree.sync()

    async def on_presence_update(self, before: discord.Member, after: discord.Member) -> None:
        self.presence_updates.put_nowait((before, after))

    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        self.channel_deletes.put_nowait(channel)

    async def on_guild_channel_update(
        self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel
    ) -> None:
        self.channel_updates.put_nowait(after)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord.running(guilds=[build_guild()]) as server:
        yield server


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[SampleBot]:
    async with run_client(SampleBot(discord.Intents.default()), fake) as client:
        assert isinstance(client, SampleBot)
        yield client


async def test_login_ready_and_command_sync(fake: FakeDiscord) -> None:
    original = current_targets()
    intents = discord.Intents.default()
    async with run_client(SampleBot(intents), fake) as client:
        assert client.user is not None
        assert client.user.id == int(fake.bot_user_id)
        guild = client.get_guild(GUILD_ID)
        assert guild is not None
        assert guild.me is not None
        assert {c.name for c in guild.text_channels} == {"general", "music"}
        assert current_targets() == (f"{fake.base_url}/api/v10", fake.gateway_url)
    assert current_targets() == original

    assert fake.intents == intents.value
    login = fake.requests[0]
    assert (login.method, login.path) == ("GET", "/users/@me")
    assert login.headers["Authorization"] == f"Bot {fake.token}"
    guild_sync = await fake.wait_for_command_sync(GUILD_ID)
    assert sorted(guild_sync.names) == ["dm", "echo", "form", "np"]
    assert (await fake.wait_for_command_sync(None)).names == ["later"]
    assert fake.unknown_requests == []


async def test_bad_token_is_a_login_failure(fake: FakeDiscord) -> None:
    with pytest.raises(discord.LoginFailure):
        async with run_client(SampleBot(discord.Intents.default()), fake, token="wrong"):
            pass


async def test_privileged_intent_not_enabled_closes_with_4014() -> None:
    async with FakeDiscord.running(guilds=[build_guild()], enabled_privileged_intents=0) as fake:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with run_client(SampleBot(discord.Intents.all()), fake):
                pass


async def test_slash_command_with_string_member_and_channel_options(
    fake: FakeDiscord, bot: SampleBot
) -> None:
    options: dict[str, OptionValue] = {
        "text": "hi",
        "member": UserArg(BOB_ID),
        "channel": ChannelArg(MUSIC_ID),
    }
    sent = await fake.send_slash_command("echo", options, user_id=ANN_ID)

    callback = await sent.wait_for_callback(timeout=WAIT)
    assert callback.type == 4
    assert callback.ephemeral
    assert callback.content == "hi|bob|music"
    reply = await sent.wait_for_reply(timeout=WAIT)
    assert reply.ephemeral
    assert reply.content == "hi|bob|music"
    assert 0 < sent.callback_latency < WAIT


async def test_subcommand_in_a_group(fake: FakeDiscord, bot: SampleBot) -> None:
    sent = await fake.send_slash_command("np", {"member": UserArg(BOB_ID)}, subcommand="show")
    reply = await sent.wait_for_reply(timeout=WAIT)
    assert reply.content == f"showing {BOB_ID}"
    assert not reply.ephemeral


@pytest.mark.parametrize("dm", [False, True], ids=["guild", "dm"])
async def test_defer_then_followup_replaces_the_thinking_message(
    fake: FakeDiscord, bot: SampleBot, dm: bool
) -> None:
    sent = await fake.send_slash_command("later", dm=dm, user_id=ANN_ID)

    callback = await sent.wait_for_callback(timeout=WAIT)
    assert callback.type == 5
    assert callback.flags & EPHEMERAL
    reply = await sent.wait_for_reply(timeout=WAIT)
    assert reply.content == "done"
    assert reply.ephemeral  # kept from the defer, as on Discord
    assert not reply.loading
    assert sent.original is reply
    assert sent.followups == [reply]


async def test_dm_is_delivered(fake: FakeDiscord, bot: SampleBot) -> None:
    sent = await fake.send_slash_command("dm", user_id=ANN_ID)
    assert (await sent.wait_for_reply(timeout=WAIT)).content == "sent"
    dm = await fake.wait_for_dm(ANN_ID, timeout=WAIT)
    assert dm.content == "hello from the bot"
    assert dm.guild_id is None


async def test_dm_to_closed_dms_is_forbidden_50007(fake: FakeDiscord, bot: SampleBot) -> None:
    fake.closed_dm_user_ids.add(str(ANN_ID))
    sent = await fake.send_slash_command("dm", user_id=ANN_ID)
    assert (await sent.wait_for_reply(timeout=WAIT)).content == "forbidden 50007"
    refused = await fake.wait_for_request(
        lambda r: r.method == "POST" and r.path.endswith("/messages"), timeout=WAIT
    )
    assert refused.status == 403
    assert fake.dms_to(ANN_ID) == []


async def test_button_opens_a_modal_and_the_submit_is_handled(
    fake: FakeDiscord, bot: SampleBot
) -> None:
    sent = await fake.send_slash_command("form", user_id=BOB_ID)
    assert (await sent.wait_for_reply(timeout=WAIT)).content == "press"

    click = await sent.click(label="Rename")
    modal = await click.wait_for_modal(timeout=WAIT)
    assert modal["title"] == "Rename"
    submitted = await click.submit_modal({"Playlist name": "Road trip"})
    reply = await submitted.wait_for_reply(timeout=WAIT)
    assert reply.content == "renamed to Road trip"
    assert reply.ephemeral
    assert submitted.user_id == str(BOB_ID)


async def test_button_updates_its_message(fake: FakeDiscord, bot: SampleBot) -> None:
    sent = await fake.send_slash_command("form", user_id=BOB_ID)
    message = await sent.wait_for_reply(timeout=WAIT)

    click = await sent.click("refresh")
    assert (await click.wait_for_callback(timeout=WAIT)).type == 7
    assert await click.wait_for_reply(timeout=WAIT) is message
    assert message.content == "refreshed"
    assert message.find_component(label="Rename")["custom_id"] == "rename"


async def test_spotify_presence_reaches_on_presence_update(fake: FakeDiscord) -> None:
    intents = discord.Intents.default()
    intents.members = True
    intents.presences = True
    spotify = make_spotify_activity(
        title="Harder, Better", artists=["Daft Punk", "Kanye"], album="Discovery", track_id="TRACK1"
    )
    async with run_client(SampleBot(intents), fake) as client:
        assert isinstance(client, SampleBot)
        await fake.update_presence(GUILD_ID, ANN_ID, [make_custom_status(), spotify])
        _, after = await asyncio.wait_for(client.presence_updates.get(), WAIT)

    assert after.id == ANN_ID
    activity = next(a for a in after.activities if isinstance(a, discord.Spotify))
    assert activity.title == "Harder, Better"
    assert activity.artists == ["Daft Punk", "Kanye"]
    assert activity.album == "Discovery"
    assert activity.track_id == "TRACK1"
    assert activity.album_cover_url.startswith("https://i.scdn.co/image/ab67")
    assert activity.duration.total_seconds() == 210


async def test_members_intent_chunk_request_is_answered(fake: FakeDiscord) -> None:
    intents = discord.Intents.default()
    intents.members = True
    async with run_client(SampleBot(intents), fake) as client:
        guild = client.get_guild(GUILD_ID)
        assert guild is not None
        assert guild.get_member(BOB_ID) is not None
    assert fake.member_chunk_requests
    assert fake.member_chunk_requests[0].get("nonce")


async def test_channel_delete_and_unknown_channel(fake: FakeDiscord, bot: SampleBot) -> None:
    music = bot.get_channel(MUSIC_ID)
    assert isinstance(music, discord.TextChannel)
    await fake.delete_channel(MUSIC_ID)

    deleted = await asyncio.wait_for(bot.channel_deletes.get(), WAIT)
    assert deleted.id == MUSIC_ID
    assert bot.get_channel(MUSIC_ID) is None
    with pytest.raises(discord.NotFound) as raised:
        await music.send("anyone?")
    assert raised.value.code == 10003


async def test_missing_permissions_then_post_edit_and_upload(
    fake: FakeDiscord, bot: SampleBot
) -> None:
    general = bot.get_channel(GENERAL_ID)
    assert isinstance(general, discord.TextChannel)
    await fake.restrict_bot(GENERAL_ID)
    await asyncio.wait_for(bot.channel_updates.get(), WAIT)
    assert not general.permissions_for(general.guild.me).send_messages
    with pytest.raises(discord.Forbidden) as raised:
        await general.send("hello?")
    assert raised.value.code == 50013

    await fake.unrestrict_bot(GENERAL_ID)
    await asyncio.wait_for(bot.channel_updates.get(), WAIT)
    start = len(fake.channel_posts)
    message = await general.send("now playing", file=discord.File(io.BytesIO(b"abc"), "np.txt"))
    posted = await fake.wait_for_message(GENERAL_ID, start=start, timeout=WAIT)
    assert posted.id == str(message.id)
    assert posted.attachments[0]["filename"] == "np.txt"
    await message.edit(content="edited")
    assert posted.content == "edited"
    assert posted.edits[-1]["content"] == "edited"


async def test_a_member_post_becomes_the_last_message(fake: FakeDiscord, bot: SampleBot) -> None:
    music = bot.get_channel(MUSIC_ID)
    assert isinstance(music, discord.TextChannel)
    ours = await music.send("now playing")
    fetched = await bot.fetch_channel(MUSIC_ID)
    assert isinstance(fetched, discord.TextChannel)
    assert fetched.last_message_id == ours.id
    theirs = await fake.post_as_member(MUSIC_ID, ANN_ID, "great song")
    fetched = await bot.fetch_channel(MUSIC_ID)
    assert isinstance(fetched, discord.TextChannel)
    assert fetched.last_message_id == int(theirs.id)
    assert [m.id for m in fake.channel_posts] == [str(ours.id)]  # only the bot's posts
    assert fake.messages[theirs.id].author["id"] == str(ANN_ID)


async def test_reconnect_is_resumed(fake: FakeDiscord, bot: SampleBot) -> None:
    await fake.request_reconnect()

    def resumed() -> bool | None:
        resume_sent = any(frame.get("op") == 6 for frame in fake.gateway_frames)
        return (fake.connected and resume_sent) or None

    await fake.wait_for(resumed, timeout=WAIT, what="a RESUME")
    sent = await fake.send_slash_command("np", subcommand="show", user_id=ANN_ID)
    assert (await sent.wait_for_reply(timeout=WAIT)).content == f"showing {ANN_ID}"
    assert len(fake.identifies) == 1


def current_targets() -> tuple[str, str]:
    """discord.py's REST base and gateway URL, as set right now."""
    return discord.http.Route.BASE, str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)


def test_point_discord_py_at_restores() -> None:
    original = current_targets()
    restore = point_discord_py_at("http://127.0.0.1:1")
    try:
        assert current_targets() == ("http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/gateway")
    finally:
        restore()
    assert current_targets() == original


async def test_session_start_limit_is_reported_spent_and_reset() -> None:
    async with (
        FakeDiscord.running(session_starts_remaining=1, session_starts_reset_after=60) as fake,
        aiohttp.ClientSession() as session,
    ):
        headers = {"Authorization": f"Bot {fake.token}"}
        async with session.get(f"{fake.api_url}/gateway/bot", headers=headers) as response:
            limit = (await response.json())["session_start_limit"]
        assert limit["total"] == 1000
        assert limit["remaining"] == 1
        assert 59_000 < limit["reset_after"] <= 60_000
        async with session.ws_connect(fake.gateway_url) as ws:
            await ws.receive_json(timeout=WAIT)  # HELLO
            await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 1}})
            assert (await ws.receive_json(timeout=WAIT))["t"] == "READY"
        assert fake.session_starts_remaining == 0
        # With nothing left, an IDENTIFY is refused (Discord would reset the token).
        async with session.ws_connect(fake.gateway_url) as ws:
            await ws.receive_json(timeout=WAIT)
            await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 1}})
            closing = await ws.receive(timeout=WAIT)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert closing.data == 4004
        assert len(fake.identifies_over_limit) == 1


async def test_gateway_handshakes_can_be_refused_while_rest_works() -> None:
    async with (
        FakeDiscord.running(refuse_gateway_handshakes=1) as fake,
        aiohttp.ClientSession() as session,
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(fake.gateway_url)
        assert refused.value.status == 503
        assert fake.refused_gateway_handshakes == 1
        async with session.ws_connect(fake.gateway_url) as ws:
            assert (await ws.receive_json(timeout=WAIT))["op"] == 10


async def test_identify_shard_decides_which_guilds_and_events_a_session_gets() -> None:
    on_zero = make_guild(id=(10 << 22) | 5, name="even")  # (id >> 22) % 2 == 0
    on_one = make_guild(id=(11 << 22) | 5, name="odd")
    async with (
        FakeDiscord.running(guilds=[on_zero, on_one], recommended_shards=2) as fake,
        aiohttp.ClientSession() as session,
    ):
        headers = {"Authorization": f"Bot {fake.token}"}
        async with session.get(f"{fake.api_url}/gateway/bot", headers=headers) as response:
            assert (await response.json())["shards"] == 2
        sockets = []
        for shard_id in (0, 1):
            ws = await session.ws_connect(fake.gateway_url)
            sockets.append(ws)
            await ws.receive_json(timeout=WAIT)  # HELLO
            identify = {"token": fake.token, "intents": 1, "shard": [shard_id, 2]}
            await ws.send_json({"op": 2, "d": identify})
            ready = await ws.receive_json(timeout=WAIT)
            assert ready["t"] == "READY"
            assert ready["d"]["shard"] == [shard_id, 2]
            expected = str((on_zero if shard_id == 0 else on_one)["id"])
            assert [g["id"] for g in ready["d"]["guilds"]] == [expected]
            created = await ws.receive_json(timeout=WAIT)
            assert (created["t"], created["d"]["id"]) == ("GUILD_CREATE", expected)
        await fake.wait_until_connected()
        # A guild's event reaches only its shard; an event without a guild goes to shard 0.
        await fake.dispatch("TYPING_START", {"guild_id": str(on_one["id"]), "channel_id": "1"})
        await fake.dispatch("TYPING_START", {"channel_id": "2"})
        first = await sockets[1].receive_json(timeout=WAIT)
        assert first["d"]["guild_id"] == str(on_one["id"])
        dm = await sockets[0].receive_json(timeout=WAIT)
        assert "guild_id" not in dm["d"]
        for ws in sockets:
            await ws.close()
        # An impossible shard is refused as Discord does (4010).
        async with session.ws_connect(fake.gateway_url) as ws:
            await ws.receive_json(timeout=WAIT)
            await ws.send_json({"op": 2, "d": {"token": fake.token, "shard": [2, 2]}})
            closing = await ws.receive(timeout=WAIT)
        assert closing.data == 4010
