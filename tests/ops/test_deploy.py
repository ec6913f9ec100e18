"""Deployment files: the compose file validates against the Compose JSON schema, the Dockerfile's steps
are the ones that work here, and a wheel (what `pip install .` in the image installs) carries the SQL and
the dashboard and can migrate a database without the source tree.

The schema is the Compose Specification's, as generated into pydantic models by the `compose-pydantic`
package (a test dependency); its JSON schema form is what jsonschema checks here. Those models do not
carry the spec's `^x-` extension rule, so extension keys are checked by name and then set aside.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from compose_pydantic.models import ComposeSpecification

from auth.settings import AuthSettings
from gateway.settings import Settings
from tests.gateway_proc import REPO, GatewayProcess
from tests.pg import TestDatabase

SCHEMA = ComposeSpecification.model_json_schema()


def _without_extensions(node: Any) -> Any:
    """The spec allows `x-*` extension fields anywhere; the generated schema does not know them."""
    if isinstance(node, dict):
        return {k: _without_extensions(v) for k, v in node.items() if not (isinstance(k, str) and k.startswith("x-"))}
    if isinstance(node, list):
        return [_without_extensions(v) for v in node]
    return node
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_compose_file_validates_against_the_compose_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    document = _without_extensions(compose())
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]
    ComposeSpecification.model_validate(document)


@pytest.mark.parametrize("break_it", [
    lambda c: c["services"]["gateway"]["depends_on"]["migrate"].update(condition="service_done"),
    lambda c: c["services"]["postgres"].update(healthchek={"test": "true"}),
    lambda c: c["services"]["gateway"].update(ports="8051:8051"),
    lambda c: c.update(servics={}),
])
def test_the_schema_catches_broken_files(break_it: Any) -> None:
    broken = _without_extensions(compose())
    break_it(broken)
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(broken))


def test_compose_services_and_their_order() -> None:
    services = compose()["services"]
    postgres, migrate, gateway = services["postgres"], services["migrate"], services["gateway"]
    assert postgres["image"].startswith("postgres:16")
    assert any(v.startswith("pgdata:") for v in postgres["volumes"]) and "pgdata" in compose()["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert migrate["command"] == ["mcp-gateway", "migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    # Migrations run once, with the admin URL; the serving process holds only the runtime login.
    assert gateway["command"] == ["mcp-gateway", "serve", "--no-migrate"]
    assert gateway["environment"]["MCP_GATEWAY_DATABASE_URL"].startswith("postgresql://mcp_gateway_app:")
    assert gateway["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                     "migrate": {"condition": "service_completed_successfully"}}
    env = gateway["environment"]
    assert env["MCP_GATEWAY_HOST"] == "0.0.0.0"
    for name in ("MCP_GATEWAY_DATABASE_URL", "MCP_GATEWAY_PUBLIC_URL", "MCP_GATEWAY_JWT_SECRET",
                 "MCP_GATEWAY_JWT_ISSUER", "MCP_GATEWAY_JWT_AUDIENCE", "MCP_GATEWAY_OIDC_ISSUER",
                 "MCP_GATEWAY_JWKS_URL", "MCP_GATEWAY_INTROSPECTION_URL"):
        assert name in env, name
    assert env["MCP_GATEWAY_DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env[
        "MCP_GATEWAY_DATABASE_URL"]


def test_compose_sets_only_real_settings() -> None:
    known = {f"MCP_GATEWAY_{name.upper()}" for name in (*Settings.model_fields, *AuthSettings.model_fields)}
    for service in compose()["services"].values():
        for name in service.get("environment", {}):
            if name.startswith("MCP_GATEWAY_"):
                assert name in known, f"{name} is not a setting"


def test_dockerfile() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = [args for word, args in steps if word == "RUN"]
    assert any(re.search(r"\bpip install \.(\s|$)", r) for r in runs), "the image installs the project as CI does"
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "MCP_GATEWAY_HOST=0.0.0.0" in env
    health = [args for word, args in steps if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]
    assert steps[-1] == ("CMD", '["mcp-gateway", "serve"]')
    ignored = (REPO / ".dockerignore").read_text()
    for source in copied_sources():
        assert (REPO / source).exists(), f"COPY {source}: missing"
        assert f"!{source}" in ignored or f"!{source}/" in ignored, f".dockerignore drops {source}"


def copied_sources() -> list[str]:
    sources = []
    for word, args in dockerfile():
        if word == "COPY":
            *src, _dest = shlex.split(args)
            sources += [s.rstrip("/") for s in src if not s.startswith("--")]
    return sources


def test_the_image_healthcheck_command_passes_against_a_gateway(gateway: GatewayProcess) -> None:
    health = next(args for word, args in dockerfile() if word == "HEALTHCHECK")
    command = health.split(" CMD ", 1)[1]
    ok = subprocess.run(["sh", "-c", command], env=os.environ | {"MCP_GATEWAY_PORT": str(gateway.port)},
                        timeout=30, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run(["sh", "-c", command], env=os.environ | {"MCP_GATEWAY_PORT": "1"}, timeout=30,
                          capture_output=True)
    assert down.returncode != 0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` on a build context holding exactly what the Dockerfile copies."""
    context = tmp_path_factory.mktemp("context")
    for source in copied_sources():
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, context / source)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(context), "--no-deps", "-w", str(out), "-q"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (found,) = out.glob("mcp_gateway-*.whl")
    return found


def test_wheel_carries_migrations_policies_and_dashboard(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for directory in ("migrations", "policies"):
        expected = {f"gateway/sql/{directory}/{p.name}" for p in (REPO / directory).glob("*.sql")}
        assert expected and expected <= names, sorted(expected - names)
    for asset in ("index.html", "dashboard.js", "dashboard.css"):
        assert f"gateway/http/static/{asset}" in names
    assert not any(n.startswith(("migrations/", "policies/", "tests/")) for n in names)


def test_installed_wheel_migrates_without_the_source_tree(wheel: Path, database: TestDatabase,
                                                          tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    env |= {"PYTHONPATH": str(site), "MCP_GATEWAY_DATABASE_URL": database.admin_url,
            "MCP_GATEWAY_DATA_DIR": str(tmp_path / "data")}
    where = subprocess.run([sys.executable, "-c", "import gateway.store.migrate as m; print(m.MIGRATIONS_DIR)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip() == str(site / "gateway" / "sql" / "migrations"), where.stderr
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "migrate"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "database is up to date" in result.stdout  # same files, same checksums as the checkout's
