from tests.oauth.flow import Flow


def test_happy_path(flow: Flow, client_id: str, alice_pat: str, gateway) -> None:
    meta = flow.metadata()
    assert meta["issuer"] == flow.base_url
    authorized = flow.full_authorization(client_id, alice_pat)
    assert authorized.params["iss"] == flow.base_url
    assert authorized.params["state"] == "st-123"
    tokens = flow.exchange(client_id, authorized)
    assert tokens.status_code == 200, tokens.text + gateway.log()[-3000:]
    body = tokens.json()
    assert body["refresh_token"]
