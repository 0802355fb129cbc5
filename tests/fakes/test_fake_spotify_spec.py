"""The fake Spotify answers what Spotify's own OpenAPI description says it answers.

Every JSON body the fake serves for the endpoints the bot uses is validated against the response
schema of that operation and status in ``tests/fixtures/specs/spotify-openapi.yml`` (OpenAPI
3.0), and so is the stored real capture. Where Spotify itself differs from its description, the
difference is one entry of :data:`TOLERATED_DEVIATIONS`, with its reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from jsonschema import Draft4Validator
from jsonschema.protocols import Validator
from jsonschema.validators import extend
from referencing.jsonschema import DRAFT4

from tests.fakes.openapi import leaf_errors, ref_to, registry_for
from tests.fakes.spotify import (
    RECENTLY_PLAYED_SCOPE,
    TOP_READ_SCOPE,
    FakeSpotify,
    ad_payload,
    artist_object,
    episode_payload,
    fixture_payload,
    local_track_payload,
    played_item,
    track_object,
    track_payload,
    unknown_payload,
)

SPEC_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "spotify-openapi.yml"
_URI = "urn:spotify-openapi"
JSON = dict[str, Any]


@dataclass(frozen=True)
class Deviation:
    """A place where Spotify answers other than its description says."""

    name: str
    reason: str
    patch: Callable[[JSON], None] | None = None  # rewrites the loaded description in place


def _actions_wrap_disallows(spec: JSON) -> None:
    disallows = {"$ref": "#/components/schemas/DisallowsObject"}
    actions = {"type": "object", "properties": {"disallows": disallows}}
    spec["components"]["schemas"]["CurrentlyPlayingObject"]["properties"]["actions"] = actions


#: The only exceptions to the description, each with what Spotify really does.
TOLERATED_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        name="null-as-absent",
        reason=(
            "Spotify answers null for fields the description types plainly (preview_url, "
            "followers.href, a page's next and previous, a local file's ids and album facts, "
            "an ad's item), so a null value is judged as if absent: it satisfies its schema, "
            "and a required key is still required to be there. (Applied by the validator.)"
        ),
    ),
    Deviation(
        name="actions-wraps-disallows",
        reason=(
            "The description puts the DisallowsObject's flags straight under `actions`; real "
            "answers (tests/fixtures/currently_playing_track.json) nest them as "
            '`"actions": {"disallows": {"resuming": true}}`.'
        ),
        patch=_actions_wrap_disallows,
    ),
    Deviation(
        name="no-content-when-idle",
        reason=(
            "GET /me/player/currently-playing answers 204 with no body when nothing is playing "
            "(docs/spotify.md); the description lists no 204 for it."
        ),
    ),
    Deviation(
        name="plain-text-403-unregistered",
        reason=(
            "A user not on a development-mode app's allow-list gets a 403 whose body is plain "
            "text, not the JSON error object the description gives for 403 (docs/spotify.md)."
        ),
    ),
)


def _null_is_absent(check: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def checked(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if instance is not None:
            yield from check(validator, value, instance, schema)

    return checked


# OpenAPI 3.0's Schema Object is JSON Schema draft 4 with extras (nullable, discriminator...).
_Validator = extend(
    Draft4Validator,
    {keyword: _null_is_absent(check) for keyword, check in Draft4Validator.VALIDATORS.items()},
)


@functools.cache
def _spec() -> JSON:
    text = SPEC_PATH.read_text(encoding="utf-8")
    spec: JSON = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for deviation in TOLERATED_DEVIATIONS:
        if deviation.patch is not None:
            deviation.patch(spec)
    return spec


@functools.cache
def _response_validator(path: str, status: int) -> Validator | None:
    """The validator of ``GET path``'s JSON answer with this status (None: not described)."""
    spec = _spec()
    response = spec["paths"][path]["get"]["responses"].get(str(status))
    if response is None:
        return None
    where: tuple[str, ...] = ("paths", path, "get", "responses", str(status))
    if "$ref" in response:  # "#/components/responses/Name"
        where = tuple(response["$ref"].removeprefix("#/").split("/"))
        response = spec["components"]["responses"][where[-1]]
    if "application/json" not in response.get("content", {}):
        return None
    schema = ref_to(_URI, *where, "content", "application/json", "schema")
    validator: Validator = _Validator(schema, registry=registry_for(_URI, spec, DRAFT4))
    return validator


def problems(path: str, status: int, body: Any) -> list[str]:
    """Where ``body`` differs from the description of ``GET path`` answering ``status``."""
    validator = _response_validator(path, status)
    if validator is None:
        return [f"the description has no JSON answer {status} for GET {path}"]
    return sorted(
        f"{'.'.join(str(p) for p in leaf.absolute_path) or '(body)'}: {leaf.message[:200]}"
        for error in validator.iter_errors(body)
        for leaf in leaf_errors(error)
    )


async def answer(
    fake: FakeSpotify, session: aiohttp.ClientSession, path: str, token: str | None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.get(f"{fake.api_base}{path}", headers=headers) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


def template(path: str) -> str:
    return path.partition("?")[0]


# --- the real capture ------------------------------------------------------------------------


def test_the_real_capture_fits_the_description() -> None:
    capture = fixture_payload("currently_playing_track.json")
    assert problems("/me/player/currently-playing", 200, capture) == []


def test_the_checks_catch_a_body_that_does_not_fit() -> None:
    capture = fixture_payload("currently_playing_track.json")
    capture["item"]["duration_ms"] = "151933"
    del capture["item"]["album"]["release_date"]
    capture["actions"]["disallows"]["resuming"] = "yes"
    assert problems("/me/player/currently-playing", 200, capture) == [
        "actions.disallows.resuming: 'yes' is not of type 'boolean'",
        "item.album: 'release_date' is a required property",
        "item.duration_ms: '151933' is not of type 'integer'",
    ]


def test_each_deviation_is_named_and_explained() -> None:
    names = [deviation.name for deviation in TOLERATED_DEVIATIONS]
    assert len(names) == len(set(names))
    assert all(len(deviation.reason) > 40 for deviation in TOLERATED_DEVIATIONS)


# --- what the fake serves --------------------------------------------------------------------


async def test_me(fake: FakeSpotify, session: aiohttp.ClientSession) -> None:
    status, body = await answer(fake, session, "/me", fake.grant_tokens("alice")[0])
    assert status == 200
    assert problems("/me", status, body) == []


PLAYING = {
    "track": lambda: track_payload("t1", "Song", 200_000, 1_000, artists=("A", "B")),
    "paused track without art": lambda: track_payload(
        "t2", "Song", 200_000, 1_000, is_playing=False, images=False
    ),
    "episode": lambda: episode_payload("e1", "Episode", 3_600_000, 60_000),
    "local file": lambda: local_track_payload("Home Demo", 120_000, 5_000),
    "ad": ad_payload,
    "unknown": unknown_payload,
    "real capture": fixture_payload,
}


@pytest.mark.parametrize("what", list(PLAYING))
async def test_currently_playing(
    fake: FakeSpotify, session: aiohttp.ClientSession, what: str
) -> None:
    fake.set_playing("alice", PLAYING[what]())
    path = "/me/player/currently-playing?additional_types=episode"
    status, body = await answer(fake, session, path, fake.grant_tokens("alice")[0])
    assert status == 200
    assert problems(template(path), status, body) == []


async def test_nothing_playing_is_the_tolerated_204(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    path = "/me/player/currently-playing"
    assert await answer(fake, session, path, fake.grant_tokens("alice")[0]) == (204, None)
    assert "204" not in _spec()["paths"][path]["get"]["responses"]  # still a deviation


async def test_recently_played(fake: FakeSpotify, session: aiohttp.ClientSession) -> None:
    token = fake.grant_tokens("alice", scope=RECENTLY_PLAYED_SCOPE)[0]
    path = "/me/player/recently-played"
    empty_status, empty = await answer(fake, session, path, token)  # no cursors: null
    fake.set_recently_played(
        "alice",
        [
            played_item(track_object("t1", "One"), 1_780_000_000.25),
            played_item(
                track_object("t2", "Two"),
                1_780_000_300.0,
                context={"type": "playlist", "uri": "spotify:playlist:p1"},
            ),
        ],
    )
    status, body = await answer(fake, session, f"{path}?limit=1", token)
    assert (empty_status, status) == (200, 200)
    assert len(body["items"]) == 1
    assert problems(path, status, body) == []
    assert problems(path, empty_status, empty) == []


@pytest.mark.parametrize("kind", ["tracks", "artists"])
async def test_top_items(fake: FakeSpotify, session: aiohttp.ClientSession, kind: str) -> None:
    items = (
        [track_object("t1", "One"), track_object("t2", "Two", artists=("A", "B"))]
        if kind == "tracks"
        else [artist_object("a1", "Ann", genres=["indie"]), artist_object("a2", "Bob")]
    )
    fake.set_top("alice", kind, "short_term", items)
    token = fake.grant_tokens("alice", scope=TOP_READ_SCOPE)[0]
    path = f"/me/top/{kind}"
    status, body = await answer(fake, session, f"{path}?time_range=short_term", token)
    assert status == 200
    assert len(body["items"]) == 2
    assert problems(path, status, body) == []


# --- errors, where the description gives their body ------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/me", "/me/player/currently-playing", "/me/player/recently-played", "/me/top/tracks"],
)
async def test_error_bodies(fake: FakeSpotify, session: aiohttp.ClientSession, path: str) -> None:
    seen: list[tuple[int, Any]] = [
        await answer(fake, session, path, None),  # 401: no token
        await answer(fake, session, path, "not-a-token"),  # 401: unknown token
    ]
    expired = fake.grant_tokens("bob")[0]
    fake.expire_access_tokens("bob")
    seen.append(await answer(fake, session, path, expired))  # 401: expired
    token = fake.grant_tokens("alice")[0]  # no scope at all
    if path in ("/me/player/recently-played", "/me/top/tracks"):
        seen.append(await answer(fake, session, path, token))  # 403: insufficient scope
    endpoint = {"/me": "me", "/me/player/currently-playing": "currently_playing"}.get(
        path, "recently_played" if "recently" in path else "top_tracks"
    )
    fake.fail_next(endpoint, 429, retry_after=5)
    seen.append(await answer(fake, session, path, token))
    fake.fail_next(endpoint, 429, retry_after=86_400, quota_exceeded=True)
    seen.append(await answer(fake, session, path, token))
    fake.fail_next(endpoint, 401)
    seen.append(await answer(fake, session, path, token))
    fake.rate_limit(0)
    seen.append(await answer(fake, session, path, token))
    statuses = [status for status, _ in seen]
    assert set(statuses) == ({401, 403, 429} if len(seen) == 8 else {401, 429})
    for status, body in seen:
        assert problems(path, status, body) == [], (status, body)


async def test_an_unregistered_user_gets_the_tolerated_plain_text_403(
    fake: FakeSpotify, session: aiohttp.ClientSession
) -> None:
    token = fake.grant_tokens("outsider")[0]
    assert await answer(fake, session, "/me", token) == (403, None)
