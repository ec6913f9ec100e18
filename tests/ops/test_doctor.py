"""`mcp-gateway doctor` against a running gateway: good token, bad token, wrong URL, bad input, bad TLS."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_proc import REPO, GatewayProcess, free_port, make_jwt


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "doctor", *args], capture_output=True, text=True,
                          timeout=60, cwd=str(REPO), env=env)


def lines(output: str) -> dict[str, str]:
    """check name -> its status word, from the doctor's report."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("ok", "WARN", "FAIL", "skip"):
            found[parts[1]] = parts[0]
    return found


def test_good_token_passes_every_check_and_prints_the_principal(gateway: GatewayProcess) -> None:
    token = make_jwt("alice", "acme", role="admin", email="alice@acme.example")
    result = doctor("--url", gateway.mcp_url, "--token", token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result.stdout) == dict.fromkeys(
        ["connect", "tls", "health", "metadata", "challenge", "token", "tools", "whoami", "gateway", "budget"], "ok")
    assert "user alice in tenant acme, role admin" in result.stdout and "alice@acme.example" in result.stdout
    assert "database up" in result.stdout
    assert token not in result.stdout + result.stderr
    # The base URL works too.
    assert doctor("--url", gateway.base_url + "/", "--token", token).returncode == 0


def test_bad_token_fails_the_token_check_with_a_fix(gateway: GatewayProcess) -> None:
    bad = make_jwt("alice", "acme", secret="not-the-gateway-secret-but-long-enough")
    result = doctor("--url", gateway.mcp_url, "--token", bad)
    assert result.returncode == 1
    status = lines(result.stdout)
    assert status["health"] == status["metadata"] == status["challenge"] == "ok"
    assert status["token"] == "FAIL" and status["tools"] == status["whoami"] == "skip"
    assert "the token was refused" in result.stdout and "fix: create a fresh token" in result.stdout
    expired = make_jwt("alice", "acme", ttl=-3600)
    result = doctor("--url", gateway.mcp_url, "--token", expired)
    assert result.returncode == 1 and lines(result.stdout)["token"] == "FAIL"


def test_wrong_url(gateway: GatewayProcess) -> None:
    token = make_jwt("alice", "acme")
    nobody = doctor("--url", f"http://127.0.0.1:{free_port()}/mcp", "--token", token)
    assert nobody.returncode == 1
    assert lines(nobody.stdout)["connect"] == "FAIL" and "is the gateway running" in nobody.stdout
    wrong_path = doctor("--url", gateway.base_url + "/prefix/mcp", "--token", token)
    assert wrong_path.returncode == 1
    assert lines(wrong_path.stdout)["health"] == "FAIL" and "path prefix" in wrong_path.stdout


def test_public_url_mismatch_is_reported(gateway: GatewayProcess) -> None:
    # Reached as localhost while the gateway believes it is 127.0.0.1: the metadata names another resource.
    result = doctor("--url", f"http://localhost:{gateway.port}/mcp", "--token", make_jwt("alice", "acme"))
    assert result.returncode == 1
    assert lines(result.stdout)["metadata"] == "FAIL"
    assert f"MCP_GATEWAY_PUBLIC_URL=http://localhost:{gateway.port}" in result.stdout


@pytest.mark.parametrize("args", [
    ("--url", "ftp://example.com", "--token", "abc"),
    ("--url", "not a url", "--token", "abc"),
    ("--url", "http://127.0.0.1:99999/mcp", "--token", "abc"),
    ("--url", "http://127.0.0.1:8051/mcp", "--token", "  "),
    ("--url", "http://127.0.0.1:8051/sse", "--token", "abc"),
    ("--url", "http://127.0.0.1:8051/mcp"),
])
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...]) -> None:
    result = doctor(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def self_signed_https(tmp_path: Path) -> Iterator[int]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_untrusted_certificate_fails_tls(self_signed_https: int) -> None:
    result = doctor("--url", f"https://localhost:{self_signed_https}/mcp", "--token", "abc")
    assert result.returncode == 1
    status = lines(result.stdout)
    assert status["connect"] == "ok" and status["tls"] == "FAIL" and status["health"] == "skip"
    assert "certificate not valid: self-signed certificate" in result.stdout


def test_a_replica_count_the_database_cannot_hold_fails_the_budget_check(gateway: GatewayProcess) -> None:
    token = make_jwt("alice", "acme")
    # 1 worker × 1000 replicas × (pool 10 + lock 1 + console 4) = 15,000 connections: far past max_connections.
    result = doctor("--url", gateway.mcp_url, "--token", token, "--replicas", "1000")
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines(result.stdout)["budget"] == "FAIL"
    assert "1 worker(s) × 1000 replica(s) × 15 connection(s) = 15000" in result.stdout
    assert "MCP_GATEWAY_DB_CONNECTION_BUDGET" in result.stdout
