from __future__ import annotations

import asyncio

from bot.aio.keyed_locks import KeyedLocks, LockEntry


async def test_one_holder_per_key_and_no_entry_left_behind() -> None:
    locks: KeyedLocks[int, LockEntry] = KeyedLocks(LockEntry)
    inside: list[int] = []
    most_inside = 0

    async def work(key: int) -> None:
        nonlocal most_inside
        async with locks.hold(key):
            inside.append(key)
            most_inside = max(most_inside, inside.count(key))
            await asyncio.sleep(0.01)
            inside.remove(key)

    await asyncio.wait_for(asyncio.gather(*(work(k % 2) for k in range(6))), 5)
    assert most_inside == 1
    assert len(locks) == 0


async def test_different_keys_do_not_wait_for_each_other() -> None:
    locks: KeyedLocks[str, LockEntry] = KeyedLocks(LockEntry)
    async with locks.hold("a"):
        async with asyncio.timeout(1):
            async with locks.hold("b") as entry:
                assert locks.get("b") is entry
        assert locks.get("b") is None
        assert locks.get("a") is not None


async def test_entry_survives_while_someone_waits() -> None:
    locks: KeyedLocks[int, LockEntry] = KeyedLocks(LockEntry)
    release = asyncio.Event()

    async def first() -> LockEntry:
        async with locks.hold(1) as entry:
            await release.wait()
            return entry

    async def second() -> LockEntry:
        async with locks.hold(1) as entry:
            return entry

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(second())
    await asyncio.sleep(0)
    assert locks.get(1) is not None
    assert locks.get(1).users == 2  # type: ignore[union-attr]
    release.set()
    first_entry, second_entry = await asyncio.wait_for(asyncio.gather(holder, waiter), 5)
    assert first_entry is second_entry  # the waiter used the same lock, not a new one
    assert len(locks) == 0
