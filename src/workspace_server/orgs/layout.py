"""Canvas placement of imported nodes (spec 06 §3.5 step 5): the canvas's own 2-column child grid.

Roots keep the coordinates the YAML gives them; children sit in a grid inside their parent whose column
width is the widest sibling subtree and whose row height is the tallest subtree in that row, so a child
that is itself a parent gets a bigger slot instead of overlapping its siblings. Kept equal to the
canvas's layout so an imported org renders tidy without a drag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LEAF_WIDTH = 240.0
LEAF_HEIGHT = 130.0
GUTTER = 14.0
TOP_PADDING = 130.0
SIDE_PADDING = 16.0
COLUMNS = 2

Size = tuple[float, float]


def children_of(node: Any) -> list[Any]:
    """A node's children: a parsed `Node` or a raw mapping."""
    kids = node.get("children") if isinstance(node, dict) else getattr(node, "children", None)
    return kids if isinstance(kids, list) else []


def subtree_size(node: Any) -> Size:
    """(width, height) of `node` with all its descendants laid out in the grid."""
    kids = children_of(node)
    if not kids:
        return LEAF_WIDTH, LEAF_HEIGHT
    sizes = [subtree_size(k) for k in kids]
    cols = min(COLUMNS, len(sizes))
    col_width = max(w for w, _ in sizes)
    rows = _row_heights(sizes, cols)
    width = SIDE_PADDING * 2 + col_width * cols + GUTTER * (cols - 1)
    height = TOP_PADDING + sum(rows) + GUTTER * (len(rows) - 1) + SIDE_PADDING
    return width, height


def _row_heights(sizes: Sequence[Size], cols: int) -> list[float]:
    rows = [0.0] * ((len(sizes) + cols - 1) // cols)
    for i, (_, h) in enumerate(sizes):
        rows[i // cols] = max(rows[i // cols], h)
    return rows


def child_slots(sizes: Sequence[Size]) -> list[tuple[float, float]]:
    """Parent-relative (x, y) of each sibling, given every sibling's subtree size."""
    if not sizes:
        return []
    cols = min(COLUMNS, len(sizes))
    col_width = max(w for w, _ in sizes)
    rows = _row_heights(sizes, cols)
    slots: list[tuple[float, float]] = []
    for i in range(len(sizes)):
        row = i // cols
        x = SIDE_PADDING + (i % cols) * (col_width + GUTTER)
        y = TOP_PADDING + sum(h + GUTTER for h in rows[:row])
        slots.append((x, y))
    return slots
