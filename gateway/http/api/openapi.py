"""The OpenAPI 3.1 document, assembled from the endpoints' pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway import __version__
from gateway.http.api import models as m
from gateway.http.api.handlers import Endpoint

REF = "#/components/schemas/{model}"
_ERROR_TEXT = {400: "Refused or failed query (reason in `detail`)", 401: "Missing or invalid bearer token",
               403: "Not allowed for your role", 404: "Not found (or not visible to you)",
               409: "Conflicts with the current state (reason in `detail`)",
               413: "Request body too large", 422: "Invalid parameter (named in `parameter`)",
               503: "Database unavailable"}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault(model.__name__, schema)
    return {"$ref": REF.format(model=model.__name__)}


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a string: drop the `null` branch pydantic adds to Optional."""
    options = schema.get("anyOf")
    if options:
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(rest[0])
            merged.pop("default", None) if merged.get("default") is None else None
            return merged
    return schema


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name, description in endpoint.path_params.items():
        params.append({"name": name, "in": "path", "required": True, "description": description,
                       "schema": {"type": "string"}})
    if endpoint.params is not None:
        schema = endpoint.params.model_json_schema()
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            prop = _not_null(dict(prop))
            description = prop.pop("description", None)
            prop.pop("title", None)
            entry: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if description:
                entry["description"] = description
            params.append(entry)
    return params


def build_openapi(endpoints: list[Endpoint], prefix: str = "/api") -> dict[str, Any]:
    components: dict[str, Any] = {}
    error_ref = _schema(m.ErrorBody, components)
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        content: dict[str, Any] = {"application/json": {"schema": _schema(endpoint.response, components)}}
        if endpoint.csv:
            content["text/csv"] = {"schema": {"type": "string"}}
        responses: dict[str, Any] = {str(endpoint.success): {"description": "OK" if endpoint.success == 200
                                                             else "Created", "content": content}}
        for status in endpoint.errors:
            if status == 401:  # from the auth layer: JSON when a token was given, empty when none was
                responses["401"] = {"description": _ERROR_TEXT[401], "headers": {
                    "WWW-Authenticate": {"schema": {"type": "string"},
                                         "description": "Bearer challenge with resource_metadata"}}}
                continue
            responses[str(status)] = {"description": _ERROR_TEXT.get(status, "Error"),
                                      "content": {"application/json": {"schema": error_ref}}}
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": endpoint.handler.__name__,
            "parameters": _parameters(endpoint),
            "responses": responses,
        }
        if endpoint.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _schema(endpoint.body, components)}}}
        paths.setdefault(prefix + endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "mcp-gateway API", "version": __version__,
                 "description": "Every result is limited by PostgreSQL row-level security to what the bearer "
                                "may see: members themselves, tenant admins their tenant, auditors everything."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
