"""Org template listing, loading and the preflight (spec 06 §3.5 steps 1–2).

Loading turns a `dir` (confined to the org templates dir) or an inline `template` into a validated
`OrgTemplate`; every failure is one of the reference's 4xx messages, never parser text. The import walk
itself lives in `importer.py`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workspace_server.common.errors import ApiError
from workspace_server.common.paths import resolve_inside_root
from workspace_server.context import AppContext
from workspace_server.orgs import envreq
from workspace_server.orgs.models import OrgTemplate, iter_nodes, too_large
from workspace_server.orgs.sources import org_templates_dir
from workspace_server.orgs.yaml_include import IncludeError, load_org_file
from workspace_server.secrets import store as secrets_store
from workspace_server.secrets.crypto import DecryptError, crypto_for

log = logging.getLogger(__name__)

ORG_FILES = ("org.yaml", "org.yml")
INVALID_DIR = "invalid org directory"
EXPANSION_FAILED = "org template expansion failed"
INVALID_TEMPLATE = "invalid org template"
PROVIDE = "provide 'dir' or 'template'"
MISSING_ENV = "missing required environment variables"
SUGGESTION = (
    "Set the missing keys as global secrets (PUT /settings/secrets), then import again; "
    'or import with "force": true to skip this check.'
)


@dataclass(frozen=True)
class LoadedOrg:
    template: OrgTemplate
    root: Path | None  # the template's directory; None for an inline template (no side files)


class TemplateInvalid(Exception):
    """The document parsed but is not an org template (wrong types, bad env spec, too large)."""


def validate_doc(doc: Any) -> OrgTemplate:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict) or too_large(doc):
        raise TemplateInvalid
    try:
        tmpl = OrgTemplate.model_validate(doc)
        env_of(tmpl)  # a malformed requirement makes the whole template invalid
    except (ValidationError, envreq.EnvSpecError, RecursionError):
        raise TemplateInvalid from None
    return tmpl


def env_of(tmpl: OrgTemplate) -> tuple[list[envreq.Req], list[envreq.Req]]:
    """(required, recommended) over the org and all its nodes, cleaned (spec 06 §3.5 env collection)."""
    required = envreq.parse_list(tmpl.required_env)
    recommended = envreq.parse_list(tmpl.recommended_env)
    for node in iter_nodes(tmpl.workspaces):
        required += envreq.parse_list(node.required_env)
        recommended += envreq.parse_list(node.recommended_env)
    return envreq.collect(required, recommended)


# ---------------------------------------------------------------- listing


def list_templates(org_dir: Path) -> list[dict[str, Any]]:
    try:
        entries = sorted(org_dir.iterdir())
    except OSError:
        return []
    items: list[dict[str, Any]] = []
    for entry in entries:
        item = _list_item(org_dir, entry.name)
        if item is not None:
            items.append(item)
    return items


def _org_file(template_dir: Path) -> Path | None:
    for name in ORG_FILES:
        if (template_dir / name).is_file():
            return template_dir / name
    return None


def _list_item(org_dir: Path, name: str) -> dict[str, Any] | None:
    template_dir = resolve_inside_root(org_dir, name)
    if template_dir is None or not template_dir.is_dir():
        return None
    org_file = _org_file(template_dir)
    if org_file is None:
        if (template_dir / ".git").exists():
            log.warning("org templates: %r has .git but no org.yaml/org.yml (a half checkout?)", name)
        return None
    try:
        tmpl = validate_doc(load_org_file(org_file, template_dir))
    except (IncludeError, yaml.YAMLError, TemplateInvalid, OSError, RecursionError):
        log.warning("org templates: skipping %r: it does not load", name)
        return None
    required, recommended = env_of(tmpl)
    return {
        "description": tmpl.description,
        "dir": name,
        "name": tmpl.name,
        "recommended_env": envreq.to_json(recommended),
        "required_env": envreq.to_json(required),
        "workspaces": len(iter_nodes(tmpl.workspaces)),
    }


async def list_for(ctx: AppContext) -> list[dict[str, Any]]:
    return await asyncio.to_thread(list_templates, org_templates_dir(ctx.settings))


# ---------------------------------------------------------------- loading


def load_dir(org_dir: Path, rel: str) -> LoadedOrg:
    """Step 1 for `dir`: confined to org_dir (the root itself allowed), org.yaml (or org.yml)."""
    template_dir = resolve_inside_root(org_dir, rel, allow_root=True) if "\\" not in rel else None
    if template_dir is None:
        raise ApiError(400, INVALID_DIR)
    org_file = _org_file(template_dir) if template_dir.is_dir() else None
    if org_file is None:
        raise ApiError(404, f"org template not found: {rel}")
    try:
        doc = load_org_file(org_file, template_dir)
    except IncludeError as exc:
        log.warning("org import %r: include failed: %s", rel, exc)
        raise ApiError(400, EXPANSION_FAILED) from None
    except (yaml.YAMLError, RecursionError):
        raise ApiError(400, INVALID_TEMPLATE) from None
    except OSError:
        raise ApiError(404, f"org template not found: {rel}") from None
    try:
        return LoadedOrg(validate_doc(doc), template_dir)
    except TemplateInvalid:
        raise ApiError(400, INVALID_TEMPLATE) from None


def load_request(org_dir: Path, body: Any) -> tuple[LoadedOrg, bool]:
    """The request body `{"dir"?, "template"?, "force"?}` → (template, force)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid request body")
    rel, inline, force = body.get("dir"), body.get("template"), body.get("force", False)
    if (rel is not None and not isinstance(rel, str)) or not isinstance(force, bool | None):
        raise ApiError(400, "invalid request body")
    if rel:
        return load_dir(org_dir, rel), bool(force)
    if inline is not None and not isinstance(inline, dict):
        raise ApiError(400, "invalid request body")
    if inline:
        try:
            tmpl = validate_doc(inline)
        except TemplateInvalid:
            raise ApiError(400, "invalid request body") from None
        if tmpl.name:
            return LoadedOrg(tmpl, None), bool(force)
    raise ApiError(400, PROVIDE)


# ---------------------------------------------------------------- preflight


async def configured_global_keys(ctx: AppContext) -> set[str]:
    """Global secret keys whose value decrypts to something non-empty."""
    crypto = crypto_for(ctx.settings)
    async with ctx.engine.connect() as conn:
        rows = await secrets_store.global_values(conn)
    keys: set[str] = set()
    for row in rows:
        try:
            if crypto.decrypt(row.value, row.version):
                keys.add(row.key)
        except DecryptError:  # unreadable: the workspace could not get it either
            log.warning("org import preflight: global secret %r does not decrypt", row.key)
    return keys


async def preflight(ctx: AppContext, loaded: LoadedOrg, force: bool) -> None:
    """Step 2: every required env (a name, or one of a group) must be a global secret, unless forced."""
    required, _ = env_of(loaded.template)
    if force:
        log.warning("org import %r: env preflight skipped (force)", loaded.template.name)
        return
    if not required:
        return
    try:
        keys = await configured_global_keys(ctx)
    except Exception:
        log.exception("org import preflight: reading global secrets failed")
        raise ApiError(500, "failed to check required environment variables") from None
    unmet = envreq.missing(required, keys)
    if unmet:
        raise ApiError(
            412,
            MISSING_ENV,
            missing_env=envreq.to_json(unmet),
            required_env=envreq.to_json(required),
            suggestion=SUGGESTION,
            template=loaded.template.name,
        )
