"""Config validation of the credential modes, the key ring (AES-GCM, rotation, row binding), and rotation
in the real database: rows written under the old key still work and are re-encrypted on use."""

from __future__ import annotations

import base64
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auth import Principal
from gateway.config import load_config
from gateway.credentials.keys import CredentialUnreadable, Keyring
from gateway.credentials.store import CredentialStore, Secret
from gateway.errors import UserError
from gateway.settings import Settings
from gateway.store.db import Database

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.urlsafe_b64encode(b"\xfb" * 32).decode().rstrip("=")  # url-safe, unpadded: accepted too


@pytest.mark.parametrize(("text", "expected"), [
    ('credentials = "per_user_pat"', "upstreams[0].credentials: Input should be 'shared', 'per_user_token',"),
    ('credentials = "per_user_token"\nbearer_token_env = "X"', "bearer_token_env is the shared credential"),
    ('credentials = "per_user_oauth"', "needs oauth.client_id"),
    ('credentials = "token_exchange"', "needs oauth.token_endpoint"),
    ('credentials = "shared"\noauth = { client_id = "x" }', "oauth applies to per_user_oauth and token_exchange"),
    ('credentials = "token_exchange"\noauth = { token_endpoint = "ftp://idp" }',
     "upstreams[0].oauth.token_endpoint: 'ftp://idp' is not an http:// or https:// URL"),
    ('credentials = "per_user_oauth"\noauth = { client_id = "gw", client_secret_env = "NOPE_SECRET_VAR" }',
     "upstreams[0].oauth.client_secret_env: environment variable NOPE_SECRET_VAR is not set"),
    ('credentials = "per_user_token"\noauth = { client_id = "gw", colour = "red" }',
     "upstreams[0].oauth.colour: unknown key"),
])
def test_bad_credential_config_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[[upstreams]]\nname = "gh"\nurl = "http://127.0.0.1:9/mcp"\n{text}\n')
    with pytest.raises(UserError) as err:
        load_config(path)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_stdio_upstream_cannot_be_per_user(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[[upstreams]]\nname = "f"\ncommand = "cat"\ncredentials = "per_user_token"\n')
    with pytest.raises(UserError, match="needs a url upstream"):
        load_config(path)


def test_modes_load_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[[upstreams]]\nname = "a"\nurl = "http://h/mcp"\n'
                    '[[upstreams]]\nname = "b"\nurl = "http://h/mcp"\ncredentials = "per_user_oauth"\n'
                    '[upstreams.oauth]\nclient_id = "gw"\nscopes = ["repo"]\n')
    a, b = load_config(path).upstreams
    assert (a.credentials, a.per_user, b.credentials, b.per_user) == ("shared", False, "per_user_oauth", True)


@pytest.mark.parametrize(("value", "expected"), [
    ("not base64!!", "key 1 is not base64"),
    (base64.b64encode(b"short").decode(), "key 1 decodes to 5 bytes, expected 32"),
    (f"{K1},{K1}", "the same key is listed twice"),
    (" , ", "no key given"),
])
def test_bad_keys_are_refused_without_echoing_them(value: str, expected: str) -> None:
    with pytest.raises(UserError) as err:
        Keyring.from_settings(Settings(credentials_key=value))
    message = str(err.value)
    assert expected in message, message
    assert not value.strip(" ,") or value not in message


def test_key_file_lines_first_is_current(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# current first\n{K2}\n\n{K1}\n")
    ring = Keyring.from_settings(Settings(credentials_key_file=path))
    assert ring is not None and len(ring.keys) == 2
    old = Keyring.parse(K1, "t").encrypt(b"v", "t", "u", "gh")
    assert ring.decrypt(old, "t", "u", "gh") == b"v" and ring.stale(old)
    assert not ring.stale(ring.encrypt(b"v", "t", "u", "gh"))
    with pytest.raises(UserError, match="not both"):
        Keyring.from_settings(Settings(credentials_key=K1, credentials_key_file=path))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20),
       st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_ciphertext_is_bound_to_its_row(plain: bytes, tenant: str, user: str, upstream: str, other: str) -> None:
    ring = Keyring.parse(K1, "t")
    blob = ring.encrypt(plain, tenant, user, upstream)
    assert ring.decrypt(blob, tenant, user, upstream) == plain
    for row in ((other, user, upstream), (tenant, other, upstream), (tenant, user, other)):
        if row != (tenant, user, upstream):
            with pytest.raises(CredentialUnreadable):
                ring.decrypt(blob, *row)
    with pytest.raises(CredentialUnreadable):
        Keyring.parse(K2, "t").decrypt(blob, tenant, user, upstream)  # a retired key is not configured
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(CredentialUnreadable):
        ring.decrypt(tampered, tenant, user, upstream)


async def test_rotation_keeps_old_rows_working_and_reencrypts_on_use(
        db: Database, admin_conn: psycopg.Connection) -> None:
    admin_conn.execute("INSERT INTO gateway.tenants (tenant_id, name) VALUES ('acme', 'Acme')")
    old_ring, new_ring = Keyring.parse(K1, "t"), Keyring.parse(f"{K2},{K1}", "t")
    await CredentialStore(db, old_ring).put("acme", "alice", "gh", "per_user_token", Secret("tok-a"))
    before = bytes(admin_conn.execute("SELECT secret FROM gateway.upstream_credentials").fetchone()[0])
    rotated = CredentialStore(db, new_ring)
    found = await rotated.get("acme", "alice", "gh")
    assert found.state == "linked" and found.secret is not None and found.secret.access_token == "tok-a"
    after = bytes(admin_conn.execute("SELECT secret FROM gateway.upstream_credentials").fetchone()[0])
    assert after != before and not new_ring.stale(after)  # re-encrypted under the current key
    # once re-encrypted, the old key can be dropped
    only_new = CredentialStore(db, Keyring.parse(K2, "t"))
    assert (await only_new.get("acme", "alice", "gh")).secret.access_token == "tok-a"  # type: ignore[union-attr]
    # and the vault never shows another user's row
    assert (await only_new.get("acme", "bob", "gh")).state == "unlinked"
    member = Principal(tenant_id="acme", user_id="bob", role="member", token_kind="jwt_hs")
    assert await only_new.metadata(member, everyone=True) == []


def test_console_login_cannot_read_credentials(database, admin_conn: psycopg.Connection) -> None:
    with psycopg.connect(database.urls.console, autocommit=True) as console:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            console.execute("SELECT secret FROM gateway.upstream_credentials")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            console.execute("SELECT upstream FROM gateway.upstream_credentials")
