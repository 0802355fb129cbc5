"""Small asyncio helpers every part may use: ending tasks, per-key locks, start-up back-off."""
