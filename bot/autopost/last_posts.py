"""The auto-post's last message per member and channel, kept in memory and in the database.

With one process the memory is the record (loaded at start, written through on each post).
With several (``shared``) any process may post for a member, so the member's rows are read
from the database again before each decision (``refresh``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from bot.storage import LastPost, LastPostsStore

log = logging.getLogger(__name__)


class LastPosts:
    def __init__(self, storage: LastPostsStore, *, shared: bool = False) -> None:
        self._storage = storage
        self.shared = shared
        self._posts: dict[tuple[int, int], LastPost] = {}  # (member, channel)

    async def load(self) -> None:
        self._posts = {
            (post.discord_user_id, post.channel_id): post
            for post in await self._storage.load_last_posts()
        }

    @property
    def by_key(self) -> Collection[tuple[int, int]]:
        return self._posts.keys()

    def get(self, member_id: int, channel_id: int) -> LastPost | None:
        return self._posts.get((member_id, channel_id))

    async def record(self, post: LastPost) -> None:
        self._posts[post.discord_user_id, post.channel_id] = post
        await self._storage.record_post(post)

    def forget_channel(self, channel_id: int) -> None:
        for key in [key for key in self._posts if key[1] == channel_id]:
            del self._posts[key]

    def forget_member(self, member_id: int) -> None:
        for key in [key for key in self._posts if key[0] == member_id]:
            del self._posts[key]

    async def refresh(self, member_id: int, channel_id: int | None = None) -> bool:
        """Shared: the member's last posts (in one channel, or all) as the database has them.
        False when they cannot be read (the caller tries again later). One process: True."""
        if not self.shared:
            return True
        storage = self._storage
        try:
            if channel_id is None:
                posts = await storage.load_last_posts_of(member_id)
            else:
                post = await storage.get_last_post(member_id, channel_id)
                posts = [post] if post is not None else []
        except Exception as exc:
            log.info("auto-post: cannot read member %s's last posts: %s", member_id, exc)
            return False
        if channel_id is None:
            self.forget_member(member_id)
        else:
            self._posts.pop((member_id, channel_id), None)
        for post in posts:
            self._posts[post.discord_user_id, post.channel_id] = post
        return True


__all__ = ["LastPosts"]
