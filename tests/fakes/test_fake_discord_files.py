"""Files in messages on the fake Discord, sent by real discord.py: interaction responses,
follow-ups after a defer, channel messages and edits; attachments parsed back by discord.py."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord.ext import commands
from PIL import Image

from tests.fakes.discord import FakeDiscord, make_channel, make_guild, make_member, run_client
from tests.fakes.discord_files import UPLOAD_LIMIT
from tests.fakes.discord_payloads import EPHEMERAL

GUILD_ID = 910_000_000_000_000_001
GENERAL_ID = 910_000_000_000_000_011
ANN_ID = 810_000_000_000_000_001
WAIT = 5.0


def png(width: int = 30, height: int = 20) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


class PictureBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            help_command=None,
            guild_ready_timeout=0.05,
        )
        self.sent: asyncio.Queue[discord.Message] = asyncio.Queue()
        guild = discord.Object(GUILD_ID)

        @self.tree.command(guild=guild, description="Answer with a picture")
        async def picture(interaction: discord.Interaction, mode: str) -> None:
            embed = discord.Embed(title="Chart").set_image(url="attachment://chart.png")
            file = discord.File(io.BytesIO(png()), "chart.png", description="A chart")
            if mode == "direct":
                await interaction.response.send_message(embed=embed, file=file)
                self.sent.put_nowait(await interaction.original_response())
            elif mode == "deferred":
                await interaction.response.defer(thinking=True)
                self.sent.put_nowait(await interaction.followup.send(embed=embed, file=file))
            elif mode == "private":
                await interaction.response.defer(thinking=True, ephemeral=True)
                self.sent.put_nowait(
                    await interaction.followup.send(embed=embed, file=file, ephemeral=True)
                )
            elif mode == "huge":
                big = discord.File(io.BytesIO(b"\0" * (UPLOAD_LIMIT + 1)), "big.bin")
                try:
                    await interaction.response.send_message(file=big)
                except discord.HTTPException as exc:
                    await interaction.response.send_message(f"refused {exc.status} {exc.code}")

    async def setup_hook(self) -> None:
        await self.tree.sync(guild=discord.Object(GUILD_ID))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    guild = make_guild(
        GUILD_ID,
        "Pictures",
        channels=[make_channel(GENERAL_ID, "general")],
        members=[make_member(id=ANN_ID, username="ann")],
    )
    async with FakeDiscord.running(guilds=[guild]) as server:
        yield server


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[PictureBot]:
    async with run_client(PictureBot(), fake) as client:
        assert isinstance(client, PictureBot)
        await fake.wait_for_command_sync(GUILD_ID)
        yield client


def assert_full_attachment(attachment: discord.Attachment, fake: FakeDiscord) -> None:
    assert attachment.filename == "chart.png"
    assert attachment.content_type == "image/png"
    assert (attachment.width, attachment.height) == (30, 20)
    assert attachment.size == len(png())
    assert attachment.description == "A chart"
    assert attachment.url.startswith(fake.base_url)
    assert attachment.proxy_url == attachment.url


@pytest.mark.parametrize("mode", ["direct", "deferred", "private"])
async def test_interaction_answers_with_a_file(
    fake: FakeDiscord, bot: PictureBot, mode: str
) -> None:
    sent = await fake.send_slash_command("picture", {"mode": mode}, user_id=ANN_ID)
    reply = await sent.wait_for_reply(timeout=WAIT)
    message = await asyncio.wait_for(bot.sent.get(), WAIT)

    # What discord.py parsed from the fake's answer.
    (attachment,) = message.attachments
    assert_full_attachment(attachment, fake)
    assert attachment.ephemeral is (mode == "private")
    assert message.embeds[0].image.url == attachment.url  # attachment:// resolved

    # What the fake recorded: multipart with payload_json and files[0].
    assert reply.ephemeral is (mode == "private")
    assert not reply.loading
    assert reply.attachments[0]["filename"] == "chart.png"
    assert fake.attachment_bytes(reply.attachments[0]) == png()
    request = next(r for r in reversed(fake.requests) if r.files)
    assert [f.field_name for f in request.files] == ["files[0]"]
    body = request.json.get("data", request.json)  # an interaction callback, or a webhook
    assert body["attachments"] == [{"id": 0, "filename": "chart.png", "description": "A chart"}]
    if mode == "private":
        assert reply.flags & EPHEMERAL

    # The attachment URL serves the bytes, as Discord's CDN would.
    async with aiohttp.ClientSession() as session, session.get(attachment.url) as response:
        assert response.status == 200
        assert await response.read() == png()
    assert await attachment.read() == png()


async def test_too_large_upload_is_refused_413(fake: FakeDiscord, bot: PictureBot) -> None:
    sent = await fake.send_slash_command("picture", {"mode": "huge"}, user_id=ANN_ID)
    reply = await sent.wait_for_reply(timeout=WAIT)
    assert reply.content == "refused 413 40005"
    assert reply.attachments == []


async def test_channel_message_and_edit_with_files(fake: FakeDiscord, bot: PictureBot) -> None:
    channel = bot.get_channel(GENERAL_ID)
    assert isinstance(channel, discord.TextChannel)
    embed = discord.Embed(title="Recap").set_thumbnail(url="attachment://chart.png")
    message = await channel.send(
        embed=embed, file=discord.File(io.BytesIO(png()), "chart.png", description="A chart")
    )
    assert_full_attachment(message.attachments[0], fake)
    assert message.embeds[0].thumbnail.url == message.attachments[0].url
    assert not message.attachments[0].ephemeral

    # Replace the picture: keep none of the old attachments, upload a new one.
    edited = await message.edit(
        attachments=[discord.File(io.BytesIO(png(40, 40)), "new.png")], embed=None
    )
    (attachment,) = edited.attachments
    assert (attachment.filename, attachment.width, attachment.height) == ("new.png", 40, 40)
    posted = fake.messages[str(message.id)]
    assert [a["filename"] for a in posted.attachments] == ["new.png"]


async def test_embed_pointing_at_a_missing_file_loses_its_image(
    fake: FakeDiscord, bot: PictureBot
) -> None:
    channel = bot.get_channel(GENERAL_ID)
    assert isinstance(channel, discord.TextChannel)
    embed = discord.Embed(title="Oops").set_image(url="attachment://absent.png")
    message = await channel.send(embed=embed, file=discord.File(io.BytesIO(png()), "chart.png"))
    assert not message.embeds[0].image
    assert message.attachments[0].filename == "chart.png"
