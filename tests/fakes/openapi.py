"""OpenAPI descriptions as JSON Schema validators: what the Discord and Spotify checks share.

A description is registered whole under one URI in a ``referencing`` registry, and a validator
for one schema in it is ``{"$ref": "<uri>#<JSON pointer>"}``: its ``#/components/schemas/...``
references resolve inside the same document, and only the schemas a body uses are visited.

A failed ``anyOf``/``oneOf`` (a union) says little by itself ("not valid under any of the given
schemas"); :func:`leaf_errors` replaces it with the errors of the branch the value meant: the one
whose ``type`` discriminator (``"type": 2`` for a button, ``"type": "track"`` for a track) it
matches, or that is not merely the ``{"type": "null"}`` of a nullable value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource, Specification

UNIONS = ("anyOf", "oneOf")


def registry_for(
    uri: str, document: Mapping[str, Any], specification: Specification[Any]
) -> Registry[Any]:
    """A registry holding one whole OpenAPI document under ``uri``."""
    resource = Resource.from_contents(document, default_specification=specification)
    return Registry().with_resource(uri, resource)


def ref_to(uri: str, *segments: str) -> dict[str, str]:
    """``{"$ref": ...}`` to the schema at ``segments`` inside the document at ``uri``."""
    escaped = (s.replace("~", "~0").replace("/", "~1") for s in segments)
    return {"$ref": uri + "#" + quote("/" + "/".join(escaped), safe="/~@")}


def leaf_errors(error: ValidationError) -> Iterator[ValidationError]:
    """``error`` itself, or for a union the leaf errors of the branch the value meant (the
    union error itself when no branch fits: a wrong discriminator, or a value of no
    admissible type)."""
    if error.validator in UNIONS and error.context:
        branch = _meant_branch(error)
        if branch is not None:
            for sub in branch:
                yield from leaf_errors(sub)
            return
    yield error


def _meant_branch(error: ValidationError) -> list[ValidationError] | None:
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    depth = len(error.absolute_path)
    meant = [errors for errors in by_branch.values() if not any(_misses(e, depth) for e in errors)]
    if meant:
        return min(meant, key=len)
    # Every branch missed: a nullable value of the wrong type meant its non-null branch.
    not_null = [errors for errors in by_branch.values() if not _only_null(errors)]
    return not_null[0] if len(not_null) == 1 and len(by_branch) > 1 else None


def _misses(error: ValidationError, depth: int) -> bool:
    """The branch is not the one meant: the discriminator differs, or the type does."""
    relative = list(error.absolute_path)[depth:]
    if not relative:
        return error.validator == "type"
    return relative == ["type"] and error.validator in ("const", "enum")


def _only_null(errors: list[ValidationError]) -> bool:
    return all(e.validator == "type" and e.validator_value == "null" for e in errors)
