"""Activity pruning (spec 06 §2.5): drop activity_logs older than ACTIVITY_RETENTION_DAYS.

The delete itself belongs to the activity service; this loop only decides when to call it.
"""

from __future__ import annotations

import logging

from workspace_server.activity.service import prune_activity
from workspace_server.context import AppContext

log = logging.getLogger(__name__)


async def prune_once(ctx: AppContext) -> int:
    days = ctx.settings.activity_retention_days
    deleted = await prune_activity(ctx.engine, days)
    if deleted:
        log.info("pruned %s activity log rows older than %d days", deleted, days)
    return deleted
