"""Discord's own OpenAPI description as the judge of every request body the bot sends.

The fake Discord answers a body that does not fit its route's request schema the way Discord
does: HTTP 400, ``{"code": 50035, "message": "Invalid Form Body", "errors": {...}}`` with the
errors nested by the path of the offending value::

    {"embeds": {"0": {"title": {"_errors": [
        {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length."}]}}}}

The description is ``tests/fixtures/specs/discord-openapi.json`` (OpenAPI 3.1, whose schemas
are JSON Schema draft 2020-12). It is read once per process, on the first body to check, and
one validator per route (method + path template) is compiled on that route's first body and
kept: a ``$ref`` into the whole document, resolved through a ``referencing`` registry, so a
route costs only the schemas it uses. The verdict on a body is remembered too (the same command
sync arrives at every bot start).

Where the description is stricter than Discord about something discord.py legitimately sends,
the exception is one entry of :data:`TOLERATED_DEVIATIONS`, with its reason; no route is ever
left unchecked. Where it is laxer than Discord's documented limits (a message's 2,000
characters, an embed's 6,000 in total), the limit checks of ``discord_payloads`` still apply.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing.jsonschema import DRAFT202012

from .openapi import UNIONS, leaf_errors, ref_to, registry_for

JSON = dict[str, Any]

SPEC_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "discord-openapi.json"
_SPEC_URI = "urn:discord-openapi"
_VERDICTS_KEPT = 1024  # bodies whose verdict is remembered


@dataclass(frozen=True)
class Deviation:
    """A place where Discord's description is stricter than Discord itself."""

    name: str
    reason: str
    patch: Callable[[JSON], None]  # rewrites the loaded description in place


def _snowflake_may_be_a_number(spec: JSON) -> None:
    string = spec["components"]["schemas"]["SnowflakeType"]  # a string of digits
    number = {"type": "integer", "minimum": 0, "format": "snowflake"}
    spec["components"]["schemas"]["SnowflakeType"] = {
        "anyOf": [string, number],
        "format": "snowflake",
    }


#: The only exceptions to the description, each with why Discord accepts what it refuses.
TOLERATED_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        name="snowflake-as-number",
        reason=(
            "The description types every snowflake as a string of digits (SnowflakeType), but "
            "Discord parses a JSON number as well, and discord.py sends some ids as numbers: "
            "`recipient_id` when it opens a DM (POST /users/@me/channels) and the `id` of each "
            "entry of `attachments` in a message with files."
        ),
        patch=_snowflake_may_be_a_number,
    ),
)


# --- finding a route's schema ------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    path: str
    pattern: re.Pattern[str]
    literal_segments: int


def _compile_template(path: str) -> _Template:
    segments = path.strip("/").split("/")
    parts = ["[^/]+" if s.startswith("{") and s.endswith("}") else re.escape(s) for s in segments]
    literal = sum(1 for s in segments if not s.startswith("{"))
    return _Template(path, re.compile("/" + "/".join(parts)), literal)


class DiscordSpec:
    """The request schemas of Discord's description, compiled per route on first use."""

    def __init__(self, spec: JSON, deviations: Sequence[Deviation] = TOLERATED_DEVIATIONS) -> None:
        for deviation in deviations:
            deviation.patch(spec)
        self._spec = spec
        self._registry = registry_for(_SPEC_URI, spec, DRAFT202012)
        # Templates with a request body, by method: the most literal segments win a tie
        # ("/users/@me/channels" before "/users/{user_id}/channels").
        self._templates: dict[str, list[_Template]] = {}
        for path, item in spec["paths"].items():
            for method, operation in item.items():
                if isinstance(operation, dict) and "requestBody" in operation:
                    self._templates.setdefault(method.upper(), []).append(_compile_template(path))
        for templates in self._templates.values():
            templates.sort(key=lambda t: -t.literal_segments)
        self._validators: dict[tuple[str, str], Draft202012Validator | None] = {}
        self._verdicts: dict[tuple[str, str | None, str], JSON | None] = {}
        self._lock = threading.Lock()

    def template(self, method: str, path: str) -> str | None:
        """The description's path template for a request path (relative to ``/api/v10``)."""
        for template in self._templates.get(method.upper(), ()):
            if template.pattern.fullmatch(path):
                return template.path
        return None

    def validator(self, method: str, path: str) -> Draft202012Validator | None:
        """The compiled validator of this request's body schema (None: the route takes none)."""
        template = self.template(method, path)
        if template is None:
            return None
        key = (method.upper(), template)
        with self._lock:
            if key not in self._validators:
                self._validators[key] = self._compile(*key)
            return self._validators[key]

    def _compile(self, method: str, template: str) -> Draft202012Validator | None:
        body = self._spec["paths"][template][method.lower()]["requestBody"]
        content: Mapping[str, Any] = body.get("content", {})
        # A multipart body's payload_json is the JSON body: its schema is application/json's.
        media = "application/json" if "application/json" in content else next(iter(content), None)
        if media is None or "schema" not in content[media]:
            return None
        where = ("paths", template, method.lower(), "requestBody", "content", media, "schema")
        return Draft202012Validator(ref_to(_SPEC_URI, *where), registry=self._registry)

    def body_errors(self, method: str, path: str, body: Any) -> JSON | None:
        """Discord's nested ``errors`` for a body that does not fit (None: it fits, or the
        route has no body schema).

        A body met before on the same route is not validated again: every bot start sends the
        same command sync, whose many option unions cost some 20 ms each time.
        """
        validator = self.validator(method, path)
        if validator is None:
            return None
        key = (method.upper(), self.template(method, path), json.dumps(body, sort_keys=True))
        with self._lock:
            if key in self._verdicts:
                return copy.deepcopy(self._verdicts[key])
        problems = [
            problem
            for error in validator.iter_errors(body)
            for leaf in leaf_errors(error)
            for problem in _problems(leaf)
        ]
        errors = nest_errors(dict.fromkeys(problems)) if problems else None
        with self._lock:
            if len(self._verdicts) >= _VERDICTS_KEPT:
                self._verdicts.pop(next(iter(self._verdicts)))  # the oldest
            self._verdicts[key] = copy.deepcopy(errors)
        return errors


@functools.cache
def discord_spec() -> DiscordSpec:
    """The one :class:`DiscordSpec` of this process, read on first use."""
    return DiscordSpec(json.loads(SPEC_PATH.read_text(encoding="utf-8")))


def body_errors(method: str, path: str, body: Any) -> JSON | None:
    """:meth:`DiscordSpec.body_errors` of the description in ``tests/fixtures/specs``."""
    return discord_spec().body_errors(method, path, body)


# --- errors the way Discord words them -----------------------------------------------------------

ErrorPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One error of an Invalid Form Body: where (a path into the body), Discord's code, text."""

    path: ErrorPath
    code: str
    message: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path) or "(body)"
        return f"{where}: {self.message} ({self.code})"


def nest_errors(problems: Iterable[Problem]) -> JSON:
    """``{"embeds": {"0": {"title": {"_errors": [{"code", "message"}]}}}}``, as Discord nests."""
    errors: JSON = {}
    for problem in problems:
        node = errors
        for key in problem.path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": problem.code, "message": problem.message})
    return errors


_REQUIRED = "This field is required"
_TYPE_NAMES = {
    "integer": ("NUMBER_TYPE_COERCE", 'Value "{}" is not int.'),
    "number": ("NUMBER_TYPE_COERCE", 'Value "{}" is not a number.'),
    "string": ("STRING_TYPE_CONVERT", 'Could not interpret "{}" as string.'),
    "boolean": ("BOOLEAN_TYPE_CONVERT", 'Could not interpret "{}" as boolean.'),
    "object": ("MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType"),
    "array": ("LIST_TYPE_CONVERT", "Only iterables may be used in a ListType"),
}


def _problems(error: ValidationError) -> list[Problem]:
    """Discord's wording of one leaf error (see :func:`leaf_errors`)."""
    path: ErrorPath = tuple(error.absolute_path)
    if error.validator == "required":  # one error per missing key, none naming it: name them
        present = error.instance if isinstance(error.instance, Mapping) else {}
        missing = [key for key in error.validator_value if key not in present]
        return [Problem((*path, key), "BASE_TYPE_REQUIRED", _REQUIRED) for key in missing]
    return [Problem(path, *_wording(error))]


def _wording(error: ValidationError) -> tuple[str, str]:
    """Discord's (code, message) for one failed keyword."""
    kind, value, instance = error.validator, error.validator_value, error.instance
    if instance is not None and error.schema.get("format") == "snowflake":
        return "NUMBER_TYPE_COERCE", f'Value "{_shown(instance)}" is not snowflake.'
    if kind in UNIONS:
        return _union_wording(error)
    if kind == "type":
        if instance is None:
            return "BASE_TYPE_REQUIRED", _REQUIRED
        expected = value if isinstance(value, str) else next(v for v in value if v != "null")
        code, text = _TYPE_NAMES.get(expected, ("BASE_TYPE_INVALID", "Invalid value {}."))
        return code, text.format(_shown(instance))
    if kind in ("maxLength", "maxItems", "maxProperties"):
        return "BASE_TYPE_MAX_LENGTH", f"Must be {value} or fewer in length."
    if kind in ("minLength", "minItems", "minProperties"):
        return "BASE_TYPE_MIN_LENGTH", f"Must be {value} or more in length."
    if kind in ("maximum", "exclusiveMaximum"):
        return "NUMBER_TYPE_MAX", f"int value should be less than or equal to {value}."
    if kind in ("minimum", "exclusiveMinimum"):
        return "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {value}."
    if kind in ("enum", "const"):
        choices = value if kind == "enum" else [value]
        return "BASE_TYPE_CHOICES", f"Value must be one of {_choices(choices)}."
    if kind == "pattern":
        return "STRING_TYPE_REGEX", "String value did not match validation regex."
    if kind == "uniqueItems":
        return "SET_TYPE_ALREADY_CONTAINS_VALUE", "The set already contains this value."
    return "BASE_TYPE_INVALID", error.message


def _union_wording(error: ValidationError) -> tuple[str, str]:
    """A union no branch of which fits: name the discriminator values it allows."""
    depth = len(error.absolute_path)
    allowed = [
        value
        for sub in error.context or ()
        if list(sub.absolute_path)[depth:] == ["type"] and sub.validator in ("const", "enum")
        for value in (sub.validator_value if sub.validator == "enum" else [sub.validator_value])
    ]
    if isinstance(error.instance, Mapping) and "type" in error.instance and allowed:
        return "UNION_TYPE_CHOICES", f'Value of field "type" must be one of {_choices(allowed)}.'
    return "UNION_TYPE_CHOICES", "Value does not match any of the allowed types."


def _choices(values: Iterable[Any]) -> str:
    ordered = sorted(set(values), key=lambda v: (0, v, "") if isinstance(v, int) else (1, 0, v))
    shown = ", ".join(json.dumps(v) for v in ordered)
    return f"({shown},)" if len(ordered) == 1 else f"({shown})"


def _shown(instance: Any) -> str:
    text = json.dumps(instance) if not isinstance(instance, str) else instance
    return text if len(text) <= 40 else text[:37] + "..."
