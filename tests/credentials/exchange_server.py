"""A small real RFC 8693 token-exchange endpoint for the token_exchange tests.

    python tests/credentials/exchange_server.py PORT HS256_SECRET AUDIENCE TOKENS_FILE

POST /token with grant_type=urn:ietf:params:oauth:grant-type:token-exchange: the subject token must be
an HS256 JWT signed with HS256_SECRET (the gateway's sign-in token) and `audience` must equal AUDIENCE.
The issued token is registered in TOKENS_FILE (which the whoami upstream reads) as belonging to the
subject. Prints "exchanged <sub>" per exchange.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

port, key, audience, tokens = int(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])


async def token(request: Request) -> JSONResponse:
    form = await request.form()
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:access_token":
        return JSONResponse({"error": "invalid_request"}, status_code=400)
    if form.get("audience") != audience:
        return JSONResponse({"error": "invalid_target"}, status_code=400)
    try:
        claims = jwt.decode(str(form.get("subject_token")), key, algorithms=["HS256"], options={"verify_aud": False})
    except jwt.PyJWTError:
        return JSONResponse({"error": "invalid_grant"}, status_code=400)
    issued = f"xchg-{secrets.token_urlsafe(16)}"
    known = json.loads(tokens.read_text()) if tokens.exists() else {}
    known[issued] = claims["sub"]
    tokens.write_text(json.dumps(known))
    print(f"exchanged {claims['sub']}", flush=True)
    return JSONResponse({"access_token": issued, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                         "token_type": "Bearer", "expires_in": 300})


app = Starlette(routes=[Route("/token", token, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
