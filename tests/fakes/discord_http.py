"""The HTTP side of the fake Discord that every route shares: what a request was, how it is
read, and how Discord words its answers (JSON with exactly ``application/json``, errors as
``{"message", "code"}``, 400 code 50035 "Invalid Form Body" with errors nested by path)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .discord_files import upload_problem
from .discord_payloads import JSON, is_empty_message, message_problems
from .discord_spec import ErrorPath, Problem, nest_errors

API_PREFIX = "/api/v10"


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py recognises JSON only by this exact Content-Type; json_response() adds a charset.
    return web.Response(body=dumps(data).encode(), status=status, content_type="application/json")


def error(status: int, code: int, message: str, errors: Any = None) -> web.Response:
    body: JSON = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status=status)


def invalid_form_body(problems: Sequence[Problem]) -> web.Response:
    return error(400, 50035, "Invalid Form Body", nest_errors(problems))


def message_body_error(
    data: JSON, files: Sequence[RecordedFile], *, new: bool, prefix: ErrorPath = ()
) -> web.Response | None:
    """Discord's refusal of a message body beyond its schema: empty (50006), files over the
    limits, or text over the limits Discord documents (50035)."""
    if new and is_empty_message(data, has_files=bool(files)):
        return error(400, 50006, "Cannot send an empty message")
    refused = upload_problem(files)
    if refused is not None:
        return error(*refused)
    problems = message_problems(data, prefix)
    return invalid_form_body(problems) if problems else None


@dataclass(frozen=True)
class RecordedFile:
    """A file part of a multipart request."""

    field_name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(eq=False)
class RecordedRequest:
    """One REST request the bot made. ``path`` is relative to ``/api/v10``."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[RecordedFile]
    received_at: float
    status: int = 0
    error: JSON | None = None  # the JSON body of an error answer (4xx/5xx)

    @property
    def invalid_form_body(self) -> bool:
        """Answered 400 code 50035: a body that did not fit Discord's schema or limits."""
        return self.error is not None and self.error.get("code") == 50035

    def __repr__(self) -> str:
        if self.invalid_form_body and self.error is not None:
            return f"<{self.method} {self.path} -> {self.status} {self.error.get('errors')}>"
        return f"<{self.method} {self.path} -> {self.status}>"


Handler = Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]]


async def read_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
    """The JSON body (``payload_json`` of a multipart body) and any uploaded files."""
    if not request.body_exists:
        return None, []
    if request.content_type == "multipart/form-data":
        payload: Any = None
        files: list[RecordedFile] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            data = bytes(await part.read(decode=False))
            if part.name == "payload_json":
                payload = json.loads(data)
            else:
                content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE)
                files.append(RecordedFile(part.name or "", part.filename, content_type, data))
        return payload, files
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        return raw.decode(errors="replace"), []
