"""`python -m tests.demo`: the bot tried without accounts, as the README says (issue 21 item 7)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.clirun import PROJECT_ROOT, run_command


@pytest.mark.timeout(180)
async def test_the_demo_shows_what_discord_received(tmp_path: Path) -> None:
    output = tmp_path / "page"
    status, text = await run_command(
        (sys.executable, "-m", "tests.demo", "--output", str(output)),
        {},
        PROJECT_ROOT,
        timeout=150,
    )
    assert status == 0, text
    assert "Traceback" not in text
    for seen in (
        "-- Bob: /np (from his status, no Spotify call) (in #general)",
        "** Status Song **",
        "-- the DM Alice gets (in a direct message)",
        "buttons: [Link Spotify] | [Paste the link]",
        "Linked as **Alice**",
        "-- auto-post in #music (in #music)",
        "** Second Wind **",
        "** Listening now in Listening Club **",
        "3 members are listening",
        "attached: chart.png",
    ):
        assert seen in text, seen
    page = (output / "index.html").read_text(encoding="utf-8")
    assert "Second Wind" in page
    assert '<img src="chart.png"' in page
    assert (output / "chart.png").read_bytes().startswith(b"\x89PNG")
