"""Files in messages, as Discord handles them, for the fake Discord.

A message with files is ``multipart/form-data``: a ``payload_json`` part (the JSON body, whose
``attachments`` list says ``{"id": n, "filename": ..., "description": ...}`` for each file) and
one ``files[n]`` part per file. Discord answers with full attachment objects (id, filename,
size, url, proxy_url, content_type, and width/height for pictures; ``ephemeral`` on an
ephemeral message) and rewrites an embed's ``attachment://<filename>`` image or thumbnail to the
attachment's URL. discord.py's ``Attachment`` requires ``id``, ``size``, ``filename``, ``url``
and ``proxy_url``. The default upload limit is 10 MiB per request, at most 10 files.
"""

from __future__ import annotations

import io
import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

UPLOAD_LIMIT = 10 * 1024 * 1024
MAX_FILES = 10
ATTACHMENT_SCHEME = "attachment://"

JSON = dict[str, Any]


class UploadedFile(Protocol):
    @property
    def field_name(self) -> str: ...

    @property
    def filename(self) -> str | None: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True)
class StoredAttachment:
    payload: JSON
    data: bytes


def upload_problem(files: Sequence[UploadedFile]) -> tuple[int, int, str] | None:
    """(HTTP status, Discord code, message) when Discord would refuse these files."""
    if len(files) > MAX_FILES:
        return 400, 50035, f"files: at most {MAX_FILES} files per message"
    if sum(len(file.data) for file in files) > UPLOAD_LIMIT:
        return 413, 40005, "Request entity too large"
    return None


def _content_type(filename: str, declared: str | None, data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    guessed, _ = mimetypes.guess_type(filename)
    if guessed:
        return guessed
    if declared and declared != "application/octet-stream":
        return declared
    return "application/octet-stream"


def _picture_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except Exception:
        return None


def build_attachments(
    payload: Mapping[str, Any] | None,
    files: Iterable[UploadedFile],
    *,
    base_url: str,
    new_id: Any,
    ephemeral: bool,
) -> list[StoredAttachment]:
    """Attachment objects for the uploaded ``files`` of one request, as Discord returns them."""
    described: dict[str, Mapping[str, Any]] = {}
    for entry in (payload or {}).get("attachments") or []:
        if isinstance(entry, Mapping) and "id" in entry:
            described[str(entry["id"])] = entry
    stored: list[StoredAttachment] = []
    for file in files:
        name = file.field_name
        index = (
            name[len("files[") : -1] if name.startswith("files[") and name.endswith("]") else name
        )
        info = described.get(index, {})
        filename = str(info.get("filename") or file.filename or "file")
        attachment_id = str(new_id())
        url = f"{base_url}/attachments/{attachment_id}/{filename}"
        attachment: JSON = {
            "id": attachment_id,
            "filename": filename,
            "size": len(file.data),
            "url": url,
            "proxy_url": url,
            "content_type": _content_type(filename, file.content_type, file.data),
            "flags": 0,
        }
        if info.get("description"):
            attachment["description"] = info["description"]
        size = _picture_size(file.data) if attachment["content_type"].startswith("image/") else None
        if size is not None:
            attachment["width"], attachment["height"] = size
        if ephemeral:
            attachment["ephemeral"] = True
        stored.append(StoredAttachment(attachment, file.data))
    return stored


def resolve_embed_attachments(embeds: Sequence[JSON], attachments: Sequence[JSON]) -> list[JSON]:
    """Embeds with ``attachment://<filename>`` images pointed at the uploaded attachment."""
    by_name = {attachment["filename"]: attachment for attachment in attachments}
    resolved: list[JSON] = []
    for embed in embeds:
        copy = dict(embed)
        for key in ("image", "thumbnail"):
            media = copy.get(key)
            url = media.get("url") if isinstance(media, Mapping) else None
            if isinstance(url, str) and url.startswith(ATTACHMENT_SCHEME):
                attachment = by_name.get(url[len(ATTACHMENT_SCHEME) :])
                if attachment is None:
                    copy.pop(key)  # Discord drops a reference to a file that is not there
                    continue
                copy[key] = {
                    "url": attachment["url"],
                    "proxy_url": attachment["proxy_url"],
                    **{k: attachment[k] for k in ("width", "height") if k in attachment},
                }
        resolved.append(copy)
    return resolved
