"""Every way the issue lists to get a token wrongly: each is a clear OAuth error and nothing is issued
(no token family, no refresh token, no code)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oauth.cimd_server import CimdServer
from tests.oauth.flow import REDIRECT, Flow, pkce, query_of
from tests.oauth.test_flow import mcp_status, tokens_for


def issued(admin: psycopg.Connection) -> tuple[int, int]:
    row = admin.execute("SELECT (SELECT count(*) FROM gateway.oauth_token_families),"
                        " (SELECT count(*) FROM gateway.oauth_refresh_tokens)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.fixture
def nothing_issued(admin: psycopg.Connection) -> Iterator[None]:
    before = issued(admin)
    yield
    assert issued(admin) == before, "a token was issued"


def assert_error(response: httpx.Response, error: str, status: int | tuple[int, ...] = 400) -> None:
    assert response.status_code in ((status,) if isinstance(status, int) else status), response.text
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body and "refresh_token" not in body


def assert_redirected_error(response: httpx.Response, error: str, state: str = "st-123",
                            redirect: str = REDIRECT) -> dict[str, str]:
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    assert location.startswith(redirect), location
    params = query_of(location)
    assert params["error"] == error and "code" not in params, params
    assert params.get("state") == state and params.get("iss"), params
    return params


def assert_page_error(response: httpx.Response, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert error in response.text
    assert response.headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------------------- PKCE

def test_missing_verifier(flow: Flow, client_id: str, alice_pat: str, nothing_issued: None) -> None:
    authorized = flow.full_authorization(client_id, alice_pat)
    assert_error(flow.exchange(client_id, authorized, code_verifier=""), "invalid_request")


def test_wrong_verifier(flow: Flow, client_id: str, alice_pat: str, nothing_issued: None) -> None:
    authorized = flow.full_authorization(client_id, alice_pat)
    assert_error(flow.exchange(client_id, authorized, code_verifier=pkce()[0]), "invalid_grant")


def test_plain_method_refused(flow: Flow, client_id: str, nothing_issued: None) -> None:
    verifier = pkce()[0]
    assert_redirected_error(flow.authorize(client_id, challenge=verifier, method="plain"), "invalid_request")


def test_missing_challenge_refused(flow: Flow, client_id: str, nothing_issued: None) -> None:
    assert_redirected_error(flow.authorize(client_id, challenge=None, method=None), "invalid_request")


# ---------------------------------------------------------------------------- redirect URIs and clients

@pytest.mark.parametrize("redirect", ["http://127.0.0.1:7777/other", "https://evil.example/callback",
                                      "http://127.0.0.1:7777/callback?x=1", "http://localhost:7777/callback"])
def test_redirect_uri_mismatch_is_a_page_not_a_redirect(flow: Flow, client_id: str, redirect: str,
                                                        nothing_issued: None) -> None:
    assert_page_error(flow.authorize(client_id, challenge=pkce()[1], redirect_uri=redirect), "invalid_request")


def test_private_scheme_must_match_exactly(flow: Flow, nothing_issued: None) -> None:
    client = flow.register(["cursor://anysphere.cursor-mcp/oauth/callback"])["client_id"]
    assert_page_error(flow.authorize(client, challenge=pkce()[1],
                                     redirect_uri="cursor://anysphere.cursor-mcp/oauth/other"), "invalid_request")


def test_redirect_uri_differs_at_the_token_endpoint(flow: Flow, alice_pat: str, nothing_issued: None) -> None:
    client = flow.register([REDIRECT, "http://127.0.0.1/second"])["client_id"]
    authorized = flow.full_authorization(client, alice_pat)
    assert_error(flow.exchange(client, authorized, redirect_uri="http://127.0.0.1/second"), "invalid_grant")


def test_unknown_client(flow: Flow, nothing_issued: None) -> None:
    assert_page_error(flow.authorize("dcr_no-such-client", challenge=pkce()[1]), "invalid_client")


def test_registration_refuses_dangerous_redirects(flow: Flow) -> None:
    for uri in ("javascript:alert(1)", "http://evil.example/cb", "https://a.example/cb#frag", "", 42):
        response = httpx.post(flow.base_url + "/oauth/register", json={"redirect_uris": [uri]})
        assert response.status_code == 400, (uri, response.text)
        assert response.json()["error"] in ("invalid_redirect_uri", "invalid_client_metadata")
    assert httpx.post(flow.base_url + "/oauth/register", content=b"{not json").status_code == 400


# ---------------------------------------------------------------------------- codes

def test_code_reuse_refused_and_revokes_what_it_issued(flow: Flow, client_id: str, alice_pat: str) -> None:
    authorized = flow.full_authorization(client_id, alice_pat)
    first = flow.exchange(client_id, authorized)
    assert first.status_code == 200
    assert_error(flow.exchange(client_id, authorized), "invalid_grant")
    deadline = time.monotonic() + 5
    while mcp_status(flow, first.json()["access_token"]) != 401:
        assert time.monotonic() < deadline, "the first exchange's token still works after code reuse"
        time.sleep(0.1)
    assert_error(flow.refresh(client_id, first.json()["refresh_token"]), "invalid_grant")


def test_expired_code(flow: Flow, client_id: str, alice_pat: str, admin: psycopg.Connection,
                      nothing_issued: None) -> None:
    authorized = flow.full_authorization(client_id, alice_pat)
    admin.execute("UPDATE gateway.oauth_codes SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
    assert_error(flow.exchange(client_id, authorized), "invalid_grant")


def test_code_of_another_client(flow: Flow, client_id: str, alice_pat: str, nothing_issued: None) -> None:
    other = flow.register()["client_id"]
    authorized = flow.full_authorization(client_id, alice_pat)
    assert_error(flow.exchange(other, authorized), "invalid_grant")


# ---------------------------------------------------------------------------- resource and audience

def test_wrong_resource_at_authorize(flow: Flow, client_id: str, nothing_issued: None) -> None:
    assert_redirected_error(flow.authorize(client_id, challenge=pkce()[1], resource="https://other.example/mcp"),
                            "invalid_target")


def test_wrong_resource_at_token(flow: Flow, client_id: str, alice_pat: str, nothing_issued: None) -> None:
    authorized = flow.full_authorization(client_id, alice_pat)
    assert_error(flow.exchange(client_id, authorized, resource="https://other.example/mcp"), "invalid_target")


def _signing_key(admin: psycopg.Connection) -> tuple[str, ec.EllipticCurvePrivateKey]:
    row = admin.execute("SELECT kid, private_pem FROM gateway.oauth_signing_keys"
                        " ORDER BY created_at LIMIT 1").fetchone()
    assert row is not None
    kid, pem = row
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return kid, key


def test_token_for_another_audience_refused_at_mcp(flow: Flow, client_id: str, alice_pat: str,
                                                   admin: psycopg.Connection) -> None:
    good = tokens_for(flow, client_id, alice_pat)["access_token"]
    assert mcp_status(flow, good) == 200
    claims = jwt.decode(good, options={"verify_signature": False})
    kid, key = _signing_key(admin)
    for change in ({"aud": "https://other.example/mcp"}, {"aud": flow.base_url + "/api"}, {"iss": "https://x.example"},
                   {"exp": int(time.time()) - 120}, {"fid": str(uuid.uuid4())}):
        forged = jwt.encode({**claims, **change, "jti": str(uuid.uuid4())}, key, algorithm="ES256",
                            headers={"kid": kid, "typ": "at+jwt"})
        assert mcp_status(flow, forged) == 401, change
    # same claims, another key under our kid
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, other, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})
    assert mcp_status(flow, forged) == 401


# ---------------------------------------------------------------------------- consent and CSRF

def test_consent_denied(flow: Flow, client_id: str, alice_pat: str, admin: psycopg.Connection,
                        nothing_issued: None) -> None:
    codes = admin.execute("SELECT count(*) FROM gateway.oauth_codes").fetchone()
    assert flow.authorize(client_id, challenge=pkce()[1]).status_code == 303
    assert flow.login(alice_pat).status_code == 303
    assert_redirected_error(flow.consent("deny"), "access_denied")
    assert admin.execute("SELECT count(*) FROM gateway.oauth_codes").fetchone() == codes


def test_forged_csrf_on_login_and_consent(flow: Flow, client_id: str, alice_pat: str, nothing_issued: None) -> None:
    assert flow.authorize(client_id, challenge=pkce()[1]).status_code == 303
    forged = flow.browser.post("/oauth/login", data={"csrf": "forged", "token": alice_pat})
    assert_page_error(forged, "invalid_request", 403)
    assert flow.login(alice_pat).status_code == 303
    forged = flow.browser.post("/oauth/consent", data={"csrf": "forged", "decision": "approve"})
    assert_page_error(forged, "invalid_request", 403)


def test_forged_pending_cookie(flow: Flow, client_id: str, alice_pat: str, nothing_issued: None) -> None:
    """Another browser's request id (or a made-up one) does not reach anyone's consent."""
    assert flow.authorize(client_id, challenge=pkce()[1]).status_code == 303
    flow.browser.cookies.set("mcpgw_oauth", "forged-request-id", path="/oauth")
    assert_page_error(flow.browser.get("/oauth/consent"), "invalid_request")


def test_idp_callback_without_idp_or_state(flow: Flow, client_id: str, nothing_issued: None) -> None:
    assert flow.authorize(client_id, challenge=pkce()[1]).status_code == 303
    assert_page_error(flow.browser.get("/oauth/callback?code=x&state=forged"), "invalid_request")


def test_consent_answer_is_single_use(flow: Flow, client_id: str, alice_pat: str) -> None:
    assert flow.authorize(client_id, challenge=pkce()[1]).status_code == 303
    assert flow.login(alice_pat).status_code == 303
    csrf = flow.csrf("/oauth/consent")
    first = flow.browser.post("/oauth/consent", data={"csrf": csrf, "decision": "approve"})
    assert first.status_code in (302, 303)
    flow.browser.cookies.clear()
    again = flow.browser.post("/oauth/consent", data={"csrf": csrf, "decision": "approve"})
    assert again.status_code == 400 and "location" not in again.headers


def test_login_refuses_bad_and_non_personal_tokens(flow: Flow, client_id: str, nothing_issued: None) -> None:
    assert flow.authorize(client_id, challenge=pkce()[1]).status_code == 303
    from tests.gateway_proc import make_jwt
    for token in ("mcpgw_" + "A" * 49, make_jwt("mallory"), "<script>"):
        response = flow.login(token)
        assert response.status_code == 401 and "location" not in response.headers
        assert "<script>" not in response.text


# ---------------------------------------------------------------------------- CIMD

def test_cimd_on_a_private_address_refused(flow: Flow, cimd: CimdServer, nothing_issued: None) -> None:
    url = cimd.publish("/private.json", {"client_name": "P", "redirect_uris": [REDIRECT]}, host="127.0.0.1")
    response = flow.authorize(url, challenge=pkce()[1])
    assert_page_error(response, "invalid_client")
    assert "refused" in response.text
    assert "/private.json" not in cimd.fetches  # never fetched


@pytest.mark.parametrize("name,body,message", [
    ("oversized", None, "larger than"),
    ("malformed", b"{not json", "not JSON"),
    ("not-an-object", b"[1, 2]", "not a JSON object"),
    ("no-redirects", {"client_name": "x", "redirect_uris": []}, "invalid"),
    ("secret-method", {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_post"}, "invalid"),
    ("other-client-id", {"client_id": "https://elsewhere.example/c.json", "redirect_uris": [REDIRECT]},
     "another client_id"),
])
def test_bad_cimd_documents(flow: Flow, cimd: CimdServer, name: str, body: object, message: str,
                            nothing_issued: None) -> None:
    if body is None:
        body = {"client_name": "x" * 40_000, "redirect_uris": [REDIRECT]}
    url = cimd.publish(f"/{name}.json", body)
    response = flow.authorize(url, challenge=pkce()[1])
    assert_page_error(response, "invalid_client")
    assert message in response.text, response.text


def test_cimd_client_full_flow(flow: Flow, cimd: CimdServer, alice_pat: str) -> None:
    url = cimd.publish("/good.json", {"client_name": "CIMD App", "client_uri": "https://app.example",
                                      "redirect_uris": [REDIRECT]})
    verifier, challenge = pkce()
    assert flow.authorize(url, challenge=challenge).status_code == 303
    assert flow.login(alice_pat).status_code == 303
    consent = flow.browser.get("/oauth/consent")
    assert "CIMD App" in consent.text and "https://app.example" in consent.text
    from tests.oauth.flow import CSRF
    csrf = CSRF.search(consent.text).group(1)  # type: ignore[union-attr]
    answer = flow.browser.post("/oauth/consent", data={"csrf": csrf, "decision": "approve"})
    code = query_of(answer.headers["location"])["code"]
    tokens = flow.token({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                         "client_id": url, "code_verifier": verifier, "resource": flow.mcp_url})
    assert tokens.status_code == 200, tokens.text
    assert mcp_status(flow, tokens.json()["access_token"]) == 200


def test_private_key_jwt_client(flow: Flow, cimd: CimdServer, alice_pat: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="k1", alg="ES256", use="sig")
    url = cimd.publish("/pkjwt.json", {"client_name": "Key client", "redirect_uris": [REDIRECT],
                                       "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [jwk]}})

    def assertion(jti: str, signer: ec.EllipticCurvePrivateKey = key) -> str:
        now = int(time.time())
        return jwt.encode({"iss": url, "sub": url, "aud": flow.base_url + "/oauth/token", "iat": now,
                           "exp": now + 60, "jti": jti}, signer, algorithm="ES256", headers={"kid": "k1"})

    def exchange(client_assertion: str | None) -> httpx.Response:
        authorized = flow.full_authorization(url, alice_pat)
        data = {"grant_type": "authorization_code", "code": authorized.code, "redirect_uri": REDIRECT,
                "code_verifier": authorized.verifier, "client_id": url}
        if client_assertion:
            data.update(client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        client_assertion=client_assertion)
        return flow.token(data)

    good = assertion("jti-1")
    assert exchange(good).status_code == 200
    assert_error(exchange(good), "invalid_client", (400, 401))  # replayed assertion
    assert_error(exchange(None), "invalid_client", (400, 401))  # no assertion: the client must authenticate
    assert_error(exchange(assertion("jti-2", ec.generate_private_key(ec.SECP256R1()))), "invalid_client", (400, 401))


# ---------------------------------------------------------------------------- open-ended input

_PARAM = st.sampled_from(["response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                          "code_challenge_method", "resource", "code", "code_verifier", "grant_type",
                          "refresh_token", "token", "client_assertion", "client_assertion_type"])
_VALUE = st.one_of(st.text(max_size=300), st.sampled_from(["code", "S256", "plain", "authorization_code",
                                                           "refresh_token", REDIRECT, "https://127.0.0.1/x.json"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(_PARAM, _VALUE, max_size=8))
def test_no_request_makes_the_server_fail(gateway, params: dict[str, str]) -> None:
    clean = {k: v.replace("\x00", "") for k, v in params.items()}
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        for response in (http.get("/oauth/authorize", params=clean), http.post("/oauth/token", data=clean),
                         http.post("/oauth/revoke", data=clean), http.post("/oauth/register", json=params)):
            assert response.status_code < 500, (response.request.url, response.text[:300])
            if response.request.url.path != "/oauth/authorize" and response.status_code >= 400:
                assert "error" in response.json()
