"""The published OpenAPI document (`GET /openapi.json`, rendered at `GET /docs`).

FastAPI generates the skeleton from the route table; this module completes it where FastAPI cannot see:

- request bodies: most handlers read their body raw (`common.http.read_json` / `read_model`) to keep the
  reference's exact 400 messages, so FastAPI knows no body model. A route declares its body once with
  `openapi_extra=body_schema(Model)` (or a JSON-schema dict where the handler parses by hand); the model's
  schema lands in `components/schemas`.
- the hot routes (heartbeat, A2A proxy: plain Starlette routes, common/routing.py) and the WebSocket
  routes (`/ws`, the terminal), described as operations of their own;
- errors: every operation lists the error statuses it can answer, each with the `{"error": string}` body
  (`4XX`/`5XX` catch the rest), and FastAPI's 422, which this server never answers, is removed;
- security: operations behind AdminAuth / WorkspaceAuth / CanvasOrBearer say so (`bearerAuth`).
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error answer: `error` is a short, stable message (part of the wire contract); "
    "a few answers add keys (e.g. `code`, `retry_after`).",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
STATUS_TEXT = {
    "400": "Bad request: the body, a parameter or an id is malformed",
    "401": "No credential, or an invalid one",
    "403": "The credential does not grant this (another workspace, access rules, origin)",
    "404": "Unknown route, method or id",
    "409": "Conflict with the current state",
    "413": "Request body over the limit",
    "429": "Rate limited (see `Retry-After`)",
    "500": "Internal error (logged server-side; the body never carries details)",
    "501": "Not implemented by this deployment",
    "502": "Upstream (agent or backend) failed",
    "503": "Unavailable: datastore down, or a feature this deployment lacks (see description)",
    "504": "Upstream timed out",
    "4XX": "Any other client error",
    "5XX": "Any other server error",
}

# Models named by body_schema, by component name; their schemas are built once the document is, with
# the rules the handler adds to the model's own (required keys, enums, patterns) applied on top.
_MODELS: dict[str, type[BaseModel]] = {}
_MODEL_RULES: dict[str, tuple[tuple[str, ...], dict[str, dict[str, Any]]]] = {}
# Extra documentation for routes FastAPI cannot describe, keyed by (METHOD, path).
_EXTRA_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {}


def _component_name(model: type[BaseModel]) -> str:
    parts = model.__module__.split(".")
    area = parts[1] if len(parts) > 2 and parts[0] == "workspace_server" else parts[-1]
    return f"{area}.{model.__name__}"


def body_schema(
    spec: type[BaseModel] | dict[str, Any],
    *,
    required: bool = True,
    max_bytes: int | None = None,
    media_type: str = "application/json",
    description: str | None = None,
    errors: dict[int, str] | None = None,
    require: tuple[str, ...] = (),
    fields: dict[str, dict[str, Any]] | None = None,
    answers: dict[int, str] | None = None,
) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself: `spec` is the pydantic model the handler
    validates with (`read_model(request, Model)`) or, where it parses by hand, the JSON schema of what it
    accepts. A model's schema only knows the model's rules: `require` (keys the handler insists on) and
    `fields` (a property's schema, e.g. an enum the handler checks) document the handler's own.
    `errors`: statuses beyond the defaults, with what they mean on this route (e.g. 503 when a feature
    is not configured); `answers`: the success statuses of a route that answers more than one."""
    if isinstance(spec, dict):
        schema = spec
    else:
        name = _component_name(spec)
        known = _MODELS.setdefault(name, spec)
        if known is not spec:
            raise ValueError(f"two body models named {name}")
        if require or fields:
            rules = (require, fields or {})
            if _MODEL_RULES.setdefault(name, rules) != rules:
                raise ValueError(f"two sets of rules for body model {name}")
        schema = {"$ref": f"#/components/schemas/{name}"}
    body: dict[str, Any] = {"required": required, "content": {media_type: {"schema": schema}}}
    notes = [description] if description else []
    if max_bytes is not None:
        notes.append(f"At most {max_bytes} bytes (413 past that).")
        body["x-max-bytes"] = max_bytes
    if notes:
        body["description"] = " ".join(notes)
    extra: dict[str, Any] = {"requestBody": body}
    if errors or answers:
        extra.update(error_responses({**(answers or {}), **(errors or {})}))
    return extra


def obj(*required: str, **properties: Any) -> dict[str, Any]:
    """A JSON object schema for a body parsed by hand: `required` keys, then each property's schema."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def text(min_length: int = 0, max_length: int | None = None, **extra: Any) -> dict[str, Any]:
    """A string (U+0000 is refused in every body: see the document's description)."""
    schema: dict[str, Any] = {"type": "string", **extra}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


UUID: dict[str, Any] = {"type": "string", "format": "uuid"}
INT32: dict[str, Any] = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
INT64: dict[str, Any] = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
NUMBER: dict[str, Any] = {"type": "number"}
BOOL: dict[str, Any] = {"type": "boolean"}
ANY_JSON: dict[str, Any] = {}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


QuerySpec = str | tuple[str, Iterable[str] | dict[str, Any]]
# an integer in a query string, as the handlers' parsers read one
COUNT: dict[str, Any] = {"pattern": "^[0-9]{1,4}$"}


def query_params(**params: QuerySpec) -> dict[str, Any]:
    """`openapi_extra` for required query parameters a handler reads from `request.query_params`:
    name=description, or name=(description, allowed values | extra schema keywords such as COUNT)."""
    out = []
    for name, spec in params.items():
        text_, values = (spec, None) if isinstance(spec, str) else spec
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if isinstance(values, dict):
            schema.update(values)
        elif values is not None:
            schema["enum"] = list(values)
        out.append({"name": name, "in": "query", "required": True, "description": text_, "schema": schema})
    return {"parameters": out}


def optional_query(**params: QuerySpec) -> dict[str, Any]:
    """`openapi_extra` for optional query parameters a handler reads from `request.query_params` (each a
    string on the wire: the handler parses numbers and flags itself)."""
    extra = query_params(**params)
    for param in extra["parameters"]:
        param["required"] = False
        param["schema"].pop("minLength", None)
    return extra


def error_responses(errors: dict[int, str]) -> dict[str, Any]:
    """`openapi_extra` documenting route-specific statuses (merged with the defaults); also the success
    statuses of a route that answers more than one."""
    return {"responses": {str(code): {"description": text} for code, text in errors.items()}}


def describe(method: str, path: str, operation: dict[str, Any]) -> None:
    """Documents a route FastAPI leaves out of its schema (hot routes, WebSockets)."""
    _EXTRA_OPERATIONS[(method.upper(), path)] = operation


def _model_components() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for name, model in sorted(_MODELS.items()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        for def_name, def_schema in schema.pop("$defs", {}).items():
            if components.setdefault(def_name, def_schema) != def_schema:
                raise ValueError(f"two nested body models named {def_name}")
        require, fields = _MODEL_RULES.get(name, ((), {}))
        if require:
            schema["required"] = sorted({*schema.get("required", []), *require})
        for key, field_schema in fields.items():
            schema.setdefault("properties", {})[key] = field_schema
        components[name] = schema
    return components


def _auth_kind(route: Any) -> str | None:
    from workspace_server.auth.deps import admin_auth, canvas_or_bearer, workspace_auth

    kinds = {admin_auth: "admin", workspace_auth: "workspace", canvas_or_bearer: "canvas"}
    dependant = getattr(route, "dependant", None)
    stack = list(getattr(dependant, "dependencies", []))
    while stack:
        dep = stack.pop()
        if dep.call in kinds:
            return kinds[dep.call]
        stack.extend(dep.dependencies)
    return None


AUTH_TEXT = {
    "admin": "AdminAuth: `Authorization: Bearer <ADMIN_TOKEN | org token>` (open while no token exists "
    "and ADMIN_TOKEN is unset).",
    "workspace": "WorkspaceAuth: the workspace's own bearer token, an org token or ADMIN_TOKEN.",
    "canvas": "CanvasOrBearer: a bearer token (admin or any workspace) once any token exists.",
}


def _operation_routes(app: FastAPI) -> Iterable[tuple[Any, str, str]]:
    from workspace_server.middleware import effective_routes

    for route, path, methods in effective_routes(app):
        for method in methods or ():
            yield route, method.lower(), path


def build_openapi(app: FastAPI) -> dict[str, Any]:
    with warnings.catch_warnings():
        # a route serving two methods yields one operationId twice; made unique below
        warnings.filterwarnings("ignore", message="Duplicate Operation ID")
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=DESCRIPTION,
            routes=app.routes,
        )
    paths: dict[str, dict[str, Any]] = doc.setdefault("paths", {})
    for (method, path), operation in _EXTRA_OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = copy.deepcopy(operation)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(_model_components())
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    auth = {(m, p): _auth_kind(r) for r, m, p in _operation_routes(app)}
    seen_ids: set[str] = set()
    for path, item in paths.items():
        for method, op in item.items():
            _complete(op, auth.get((method, path)), path)
            op_id = op.get("operationId") or f"{method}_{path}"
            if op_id in seen_ids:
                op_id = f"{op_id}_{method}"
            seen_ids.add(op_id)
            op["operationId"] = op_id
    return doc


def _complete(op: dict[str, Any], auth: str | None, path: str) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)  # this server answers 400 {"error": …}, never FastAPI's 422
    if auth is not None:
        op["x-auth"] = auth  # admin | workspace | canvas
        op.setdefault("security", [{"bearerAuth": []}])
        note = AUTH_TEXT[auth]
        op["description"] = f"{op['description']}\n\n{note}" if op.get("description") else note
    codes = {"400", "404", "429", "500", "503"}
    if auth is not None:
        codes |= {"401", "403"}
    if "requestBody" in op:
        codes.add("413")
    for code in sorted(codes):
        responses.setdefault(code, {})
    for code, response in responses.items():
        response.setdefault("description", STATUS_TEXT.get(code, "Error"))
        if code[0] in "45" and "content" not in response:
            response["content"] = {"application/json": {"schema": ERROR_REF}}
    for code in ("4XX", "5XX"):
        responses.setdefault(
            code, {"description": STATUS_TEXT[code], "content": {"application/json": {"schema": ERROR_REF}}}
        )


DESCRIPTION = """Control plane for teams of AI-agent workspaces, wire-compatible with Molecule AI's Go
workspace-server.

Errors are always `{"error": "<message>"}` (some add keys). Request bodies are JSON objects unless stated;
unknown keys are ignored; NaN/Infinity, numbers out of range, U+0000 and lone surrogates are refused (400).
Ids are UUIDs; a malformed id is a 400 or a 404, never a 500. Every body is capped at `MAX_BODY_BYTES`
(default 10 MiB; 413 past it); routes with a lower cap say so (`x-max-bytes`). Credentials:
`Authorization: Bearer <token>` (admin token, org token or a workspace's own token, per route)."""


# Swagger UI's script and styles are served from the `fastapi-offline` package (Swagger UI 5, which reads
# OpenAPI 3.1): the page works on a machine with no internet, and its policy needs no third-party origin.
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'"
)


def _docs_asset(name: str) -> bytes:
    from importlib.resources import files

    return (files("fastapi_offline") / "static" / name).read_bytes()


def install(app: FastAPI) -> None:
    """Serves `GET /openapi.json` (built once, then cached) and `GET /docs` (Swagger UI, with its two
    assets under `/docs/`). All are open routes: the document describes the API's shape only, no data
    (docs/decisions.md). The endpoints reach the app through the request, never a closure: FastAPI keeps
    endpoint callables in a process-wide cache, and one holding the app would keep every app (and its
    context) a process ever built alive."""
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    app.add_api_route("/openapi.json", _openapi_json, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", _docs, methods=["GET"], include_in_schema=False)
    for name, media_type in DOCS_ASSETS.items():
        app.add_api_route(
            f"/docs/{name}", _asset_route(name, media_type), methods=["GET"], include_in_schema=False
        )


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        app.openapi_schema = build_openapi(app)
    return app.openapi_schema


async def _openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


async def _docs(request: Request) -> HTMLResponse:
    from fastapi.openapi.docs import get_swagger_ui_html

    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{request.app.title} — API",
        swagger_js_url="/docs/swagger-ui-bundle.js",
        swagger_css_url="/docs/swagger-ui.css",
        swagger_favicon_url="data:,",
    )
    return HTMLResponse(page.body, headers={"content-security-policy": DOCS_CSP})


@functools.cache  # one endpoint (and one copy of its body) per asset, however many apps a process builds
def _asset_route(name: str, media_type: str) -> Callable[[], Awaitable[Response]]:
    body = _docs_asset(name)  # a few MB, served as is

    async def asset() -> Response:
        return Response(body, media_type=media_type, headers={"cache-control": "public, max-age=86400"})

    return asset
