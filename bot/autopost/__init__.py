"""Auto-posting: follow members' playback and post their new items in the music channel.

One concern per module; dependencies point down this list:

* ``service``: :class:`AutopostService`, what the rest of the bot talks to; wires the parts.
* ``poll_loop``: the one polling loop (bounded concurrency, the sender's 429 hold).
* ``posting``: the posting rules (observe, dedupe, post or edit, a dead channel turns off).
* ``roster``: who is followed (membership cache, lookup workers, suspend/resume).
* ``settings``: music channels, links and opt-in choices (``AutopostSettings``).
* ``scheduler``: when to check each member (pure), on ``check_queue`` (per-member state and
  heaps), ``budget`` (the rolling window, the end checks' headroom, the hold) and, under a
  daily budget, ``pace`` (the day's plan) with ``profile`` (members' hours) and ``skips``
  (where skips happen).
* ``observations``: what a check found; ``config``: the tuning; ``ports``: what the auto-poster
  needs from Discord, Spotify and the app (``discord_side`` implements Discord over discord.py).
"""
