"""Server-rendered sign-in, consent and error pages. No script, no external resources; every
value is HTML-escaped; the headers forbid framing (clickjacking) and caching."""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}"
          "h1{font-size:1.3rem}.box{border:1px solid #ccc;border-radius:8px;padding:1rem 1.2rem}"
          "input[type=password]{width:100%;padding:.5rem;box-sizing:border-box;margin:.5rem 0}"
          "button{padding:.5rem 1.2rem;margin-right:.5rem}.err{color:#a00}.muted{color:#666;font-size:.9rem}"
          "code{word-break:break-all}")


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1>{body}</body></html>")
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def error_page(error: str, description: str, status: int = 400) -> HTMLResponse:
    return page("Sign-in failed", f"<div class=box><p class=err><b>{escape(error)}</b>: {escape(description)}</p>"
                                  "<p class=muted>Start again from your application.</p></div>", status)


def login_page(csrf: str, client_name: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    problem = f"<p class=err>{escape(error)}</p>" if error else ""
    return page("Sign in to mcp-gateway", (
        f"<div class=box><p><b>{escape(client_name)}</b> wants to connect to this MCP gateway.</p>{problem}"
        "<form method=post action=/oauth/login>"
        f"<input type=hidden name=csrf value='{escape(csrf, quote=True)}'>"
        "<label for=token>Personal access token</label>"
        "<input id=token name=token type=password autocomplete=off required>"
        "<button type=submit>Sign in</button></form>"
        "<p class=muted>Create one with <code>mcp-gateway token create</code>; it is used once, to sign you in, "
        "and never given to the application.</p></div>"), status)


def consent_page(csrf: str, *, client_name: str, client_id: str, client_uri: str | None, redirect_host: str,
                 scope: str, user: str, tenant: str) -> HTMLResponse:
    link = (f"<p class=muted>Home page: <code>{escape(client_uri)}</code></p>" if client_uri else "")
    return page("Allow access?", (
        f"<div class=box><p><b>{escape(client_name)}</b> wants to use the MCP gateway as "
        f"<b>{escape(user)}</b> (tenant <b>{escape(tenant)}</b>).</p>"
        f"<p class=muted>Client: <code>{escape(client_id)}</code></p>{link}"
        f"<p class=muted>Returns to: <code>{escape(redirect_host)}</code></p>"
        f"<p>Requested access: <code>{escape(scope or 'mcp')}</code> — call the tools you may call, as you.</p>"
        "<form method=post action=/oauth/consent>"
        f"<input type=hidden name=csrf value='{escape(csrf, quote=True)}'>"
        "<p><label><input type=checkbox name=remember value=1> Remember this client</label></p>"
        "<button type=submit name=decision value=approve>Allow</button>"
        "<button type=submit name=decision value=deny>Deny</button></form></div>"))
