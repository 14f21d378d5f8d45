"""Workspace rules: create, views, update, delete cascade, state, config, budget, viewport (spec 01).

No HTTP here: routes parse the request and call these; errors are `ApiError`s with the reference's text.
Provisioning and stopping go through an optional backend hook in `ctx.provisioner`
(see `ProvisionerHook`); with none, creates fail fast with a clear reason and deletes stop nothing.

The rules live in one module a concern: `create` (and the external connection block), `update` (PATCH,
config, budget, viewport, bootstrap-failed), `delete` (the cascade), `queries` (list, get, state), over
`base` (the context, the hook, the read-or-500 query). `WorkspaceService` joins them; import from here.
"""

from __future__ import annotations

from workspace_server.workspaces.service.base import ProvisionerHook, truncate_utf8
from workspace_server.workspaces.service.create import (
    CURL_REGISTER_TEMPLATE,
    NO_BACKEND_EVENT_ERROR,
    NO_BACKEND_REASON,
    PYTHON_SNIPPET_TEMPLATE,
    CreateOps,
    connection_block,
)
from workspace_server.workspaces.service.delete import CONFIRM_MESSAGE, DELETE_CLEANUP_SECONDS, DeleteOps
from workspace_server.workspaces.service.queries import QueryOps
from workspace_server.workspaces.service.update import (
    BOOTSTRAP_DEFAULT_ERROR,
    BOOTSTRAP_ERROR_BYTES,
    BOOTSTRAP_TAIL_BYTES,
    IDLE_MINUTES_ERROR,
    UpdateOps,
    budget_view,
    parse_budget_limit,
)


class WorkspaceService(CreateOps, UpdateOps, DeleteOps, QueryOps):
    """The one object the routes, the team, bundle and org-import paths use: `WorkspaceService(ctx)`."""


__all__ = [
    "BOOTSTRAP_DEFAULT_ERROR",
    "BOOTSTRAP_ERROR_BYTES",
    "BOOTSTRAP_TAIL_BYTES",
    "CONFIRM_MESSAGE",
    "CURL_REGISTER_TEMPLATE",
    "DELETE_CLEANUP_SECONDS",
    "IDLE_MINUTES_ERROR",
    "NO_BACKEND_EVENT_ERROR",
    "NO_BACKEND_REASON",
    "PYTHON_SNIPPET_TEMPLATE",
    "ProvisionerHook",
    "WorkspaceService",
    "budget_view",
    "connection_block",
    "parse_budget_limit",
    "truncate_utf8",
]
