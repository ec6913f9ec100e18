"""Tool errors for per-user upstreams: what the model reads, with the URL where the user acts."""

from __future__ import annotations

import logging

from fastmcp.exceptions import ToolError


class CredentialError(ToolError):
    """The caller has no usable credential for a per-user upstream. Never carries a credential."""

    def __init__(self, message: str, link_url: str) -> None:
        super().__init__(message, log_level=logging.INFO)
        self.link_url = link_url


class CredentialMissing(CredentialError):
    def __init__(self, upstream: str, link_url: str) -> None:
        super().__init__(f"upstream {upstream!r} acts as you, and you have not linked your {upstream} account yet."
                         f" Ask the user to link it at {link_url} and then call the tool again.", link_url)


class CredentialRejected(CredentialError):
    def __init__(self, upstream: str, link_url: str, why: str = "refused your credential") -> None:
        super().__init__(f"upstream {upstream!r} {why}; it is marked as needing re-link. Ask the user to link"
                         f" the {upstream} account again at {link_url} and then call the tool again.", link_url)


class CredentialUnavailable(CredentialError):
    """The gateway could not obtain a credential right now (e.g. the IdP is unreachable)."""
