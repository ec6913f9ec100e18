"""Text that arrives from outside (claims, client names): what may become an identifier, how display
text is cleaned, and how any text is made storable in PostgreSQL.

An IdP passes a user's profile through verbatim, and a client names itself as it likes, so any of
these strings can hold NUL, lone UTF-16 surrogates, control characters, bidi overrides or 10 kB.

- Identifiers (tenant, subject, issuer) are compared and stored as they are. One that cannot be
  stored faithfully, or that holds characters whose only use in a name is to hide or fake one,
  is refused: `identifier_problem` says why, in words fit for a 401's error_description.
- Display text (name, email, client name/version) is cleaned instead: `display_text` drops what
  cannot be stored or shown safely and truncates to a documented length.
- `storable` is the last resort for text the gateway writes anyway (tool names, error messages):
  NUL and lone surrogates become U+FFFD, everything else is kept.
"""

from __future__ import annotations

import re
from typing import Any

# Limits, in characters (code points). Tenant and user ids match the database's CHECKs.
MAX_TENANT_ID = 200
MAX_USER_ID = 500
MAX_NAME = 200
MAX_EMAIL = 320
MAX_CLIENT_NAME = 200
MAX_CLIENT_VERSION = 100

# Bidirectional formatting (embeddings, overrides, isolates, marks): they reorder what a person
# reads without changing what a machine compares.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# Characters that end a line somewhere (a log viewer, a CSV reader, a terminal).
_LINE_BREAKS = "\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029"
_SURROGATES = "\ud800-\udfff"

_NOT_STORABLE = re.compile(f"[\x00{_SURROGATES}]")
_UNSAFE_IN_IDENTIFIER = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}\u2028\u2029{_SURROGATES}]")
_DISPLAY_BREAKS = re.compile(f"[{_LINE_BREAKS}]+")
_DISPLAY_DROPPED = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")
_DISPLAY_ANY = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}\u2028\u2029{_SURROGATES}]")


def identifier_problem(value: str, limit: int) -> str | None:
    """Why `value` cannot be an identifier (e.g. "contains a NUL character"), or None if it can."""
    if not value.strip():
        return "is empty"
    if len(value) > limit:
        return f"is longer than {limit} characters"
    found = _UNSAFE_IN_IDENTIFIER.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains a NUL character"
    if "\ud800" <= char <= "\udfff":
        return "contains an unpaired UTF-16 surrogate"
    if char in "\u2028\u2029" or char < "\xa0":
        return "contains a control character"
    return "contains a bidirectional formatting character"


def display_text(value: Any, limit: int) -> str | None:
    """A display string fit to store and show: line breaks become spaces; NUL, lone surrogates, other
    control and bidi formatting characters are dropped; ends stripped; at most `limit` characters.
    Not a string, or nothing left: None."""
    if not isinstance(value, str):
        return None
    if _DISPLAY_ANY.search(value):
        value = _DISPLAY_DROPPED.sub("", _DISPLAY_BREAKS.sub(" ", value))
    value = value.strip()
    if len(value) > limit:
        value = value[:limit].rstrip()
    return value or None


def storable(value: str) -> str:
    """`value` with what PostgreSQL text cannot hold (NUL, lone surrogates) replaced by U+FFFD."""
    return _NOT_STORABLE.sub("\ufffd", value) if _NOT_STORABLE.search(value) else value
