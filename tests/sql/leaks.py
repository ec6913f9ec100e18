"""What counts as a leak of tenant B to tenant A."""

from __future__ import annotations

from tests.api.seed import MARKER, REQUESTS, SESSIONS, B, rid

B_SECRETS = [MARKER] + [str(s.id) for s in SESSIONS if s.tenant == B] + [
    str(rid(i)) for i, (name, *_rest) in enumerate(REQUESTS) if name.startswith("b-")]


def leaked(text: str, snoop: bool = False) -> str | None:
    """The first B secret found in `text` (B's tenant id too when the attacker is snooping)."""
    for secret in B_SECRETS + ([B] if snoop else []):
        if secret in text:
            return secret
    return None
