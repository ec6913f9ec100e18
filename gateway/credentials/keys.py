"""The operator's key ring for upstream credentials (AES-256-GCM).

A stored secret is `b"\x01" + key_id(4) + nonce(12) + ciphertext+tag`. key_id is the first
four bytes of SHA-256 of the key, so a row names the key that wrote it and rotation needs
no extra column. The associated data is the row's (tenant, user, upstream): a ciphertext
copied into another user's row (or another upstream's) does not decrypt.

Rotation: MCP_GATEWAY_CREDENTIALS_KEY="new,old" (or one key per line in the key file). The
first key encrypts; every key decrypts; `Keyring.stale` tells the store to re-encrypt a row
written under an older key the next time it is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import UserError
from gateway.settings import Settings

_VERSION = b"\x01"
_KEY_BYTES = 32


class CredentialUnreadable(Exception):
    """The stored secret cannot be decrypted with any configured key (wrong row, unknown or retired key)."""


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


def _decode_key(text: str, where: str, index: int) -> bytes:
    try:
        standard = text.replace("-", "+").replace("_", "/").rstrip("=")  # url-safe alphabet accepted too
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{where}: key {index + 1} is not base64 (make one with `openssl rand -base64 32`)") from None
    if len(raw) != _KEY_BYTES:
        raise UserError(f"{where}: key {index + 1} decodes to {len(raw)} bytes, expected {_KEY_BYTES}"
                        " (make one with `openssl rand -base64 32`)")
    return raw


@dataclass(frozen=True)
class Keyring:
    keys: tuple[bytes, ...]  # first = current

    @classmethod
    def parse(cls, text: str, where: str) -> Keyring:
        parts = [p.strip() for p in text.replace("\n", ",").split(",")]
        parts = [p for p in parts if p and not p.startswith("#")]
        if not parts:
            raise UserError(f"{where}: no key given")
        keys = tuple(_decode_key(p, where, i) for i, p in enumerate(parts))
        if len({_key_id(k) for k in keys}) != len(keys):
            raise UserError(f"{where}: the same key is listed twice")
        return cls(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring | None:
        """The configured ring, or None when neither setting is given."""
        if settings.credentials_key is not None and settings.credentials_key_file is not None:
            raise UserError("set MCP_GATEWAY_CREDENTIALS_KEY or MCP_GATEWAY_CREDENTIALS_KEY_FILE, not both")
        if settings.credentials_key is not None:
            return cls.parse(settings.credentials_key.get_secret_value(), "MCP_GATEWAY_CREDENTIALS_KEY")
        if settings.credentials_key_file is not None:
            path = Path(settings.credentials_key_file).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise UserError(f"MCP_GATEWAY_CREDENTIALS_KEY_FILE: cannot read {path} ({exc.strerror})") from None
            return cls.parse(text, f"MCP_GATEWAY_CREDENTIALS_KEY_FILE ({path})")
        return None

    def encrypt(self, plaintext: bytes, tenant_id: str, user_id: str, upstream: str) -> bytes:
        key = self.keys[0]
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext, _aad(tenant_id, user_id, upstream))
        return _VERSION + _key_id(key) + nonce + sealed

    def decrypt(self, blob: bytes, tenant_id: str, user_id: str, upstream: str) -> bytes:
        if len(blob) < 1 + 4 + 12 + 16 or blob[:1] != _VERSION:
            raise CredentialUnreadable("unknown credential format")
        key_id, nonce, body = blob[1:5], blob[5:17], blob[17:]
        for key in self.keys:
            if _key_id(key) == key_id:
                try:
                    return AESGCM(key).decrypt(nonce, body, _aad(tenant_id, user_id, upstream))
                except InvalidTag:
                    raise CredentialUnreadable("the credential does not belong to this row") from None
        raise CredentialUnreadable("the credential was written under a key that is no longer configured")

    def stale(self, blob: bytes) -> bool:
        """Written under an older key: re-encrypt on use."""
        return blob[1:5] != _key_id(self.keys[0])


def _aad(tenant_id: str, user_id: str, upstream: str) -> bytes:
    # Length-prefixed so ("a", "bc") and ("ab", "c") differ.
    out = b"mcp-gateway upstream credential v1"
    for part in (tenant_id, user_id, upstream):
        data = part.encode()
        out += len(data).to_bytes(4, "big") + data
    return out
