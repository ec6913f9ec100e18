"""Configuration comes through the (frozen, documented) settings models, not ad-hoc environment reads.

The only direct reads allowed in auth/, gateway/ and fastmcp_private/: secrets the config file names by variable
(an upstream's `bearer_token_env`, `env_from`), and the standard OTEL_* variables. Anything else
must be a field of gateway.settings.Settings or auth.settings.AuthSettings, so it is validated and
appears in the generated configuration reference.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (file, the expression inside the read) -> why it may read the environment directly
ALLOWED = {
    ("gateway/mcp/upstreams.py", "source"): "env_from: a variable the config file names for a stdio child",
    ("gateway/mcp/upstreams.py", "cfg.bearer_token_env"): "an upstream's bearer token, by the name the config gives",
    ("gateway/config.py", "upstream.bearer_token_env"): "checks that the named secret exists at start",
    ("gateway/config.py", "source"): "checks that an env_from source exists at start",
    ("gateway/config.py", "secret_env"): "checks that a secret the config file names exists at start",
    ("gateway/credentials/oauth.py", "config.oauth.client_secret_env"): "an upstream OAuth client's secret, by name",
    ("gateway/credentials/resolver.py", "oauth.client_secret_env"): "an upstream OAuth client's secret, by name",
    ("gateway/oauth/config.py", "self.client_secret_env"): "a pre-registered OAuth client's secret, by name",
    ("gateway/cli/workers.py", "INHERITED_FDS"): "the listening sockets a `serve --workers` supervisor hands a worker",
    ("gateway/otel.py", "'OTEL_EXPORTER_OTLP_ENDPOINT'"): "standard OpenTelemetry variable",
    ("gateway/otel.py", "'OTEL_SERVICE_NAME'"): "standard OpenTelemetry variable",
    ("gateway/otel.py", "'FASTMCP_TELEMETRY_MODE'"): "FastMCP's own variable: a telemetry mode set on purpose is kept",
}


def _environment_reads(path: Path) -> list[str]:
    """The first argument of each os.environ.get / os.getenv / os.environ[...] / `in os.environ`."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []

    def is_environ(node: ast.AST) -> bool:
        return ast.unparse(node) in ("os.environ", "environ")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("os.environ.get", "environ.get", "os.getenv", "getenv", "os.environ.setdefault"):
                found.append(ast.unparse(node.args[0]) if node.args else "?")
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            found.append(ast.unparse(node.slice))
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            found.append(ast.unparse(node.left))
        elif isinstance(node, ast.Name | ast.Attribute) and ast.unparse(node) in ("os.environ", "environ"):
            continue
    return found


def test_environment_is_read_only_where_allowed() -> None:
    unexpected = []
    for package in ("auth", "gateway", "fastmcp_private"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for what in _environment_reads(path):
                if (rel, what.replace('"', "'")) not in ALLOWED:
                    unexpected.append(f"{rel}: reads the environment ({what}); add a settings field instead")
    assert unexpected == []


def test_the_checker_sees_each_kind_of_read(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('import os\nos.environ.get("A")\nos.getenv("B")\nos.environ["C"]\n"D" in os.environ\n')
    assert _environment_reads(sample) == ["'A'", "'B'", "'C'", "'D'"]
