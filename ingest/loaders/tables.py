"""Tables as Markdown text that keeps its meaning when cut: the rows go in small groups, each group a paragraph that
repeats the header, so whichever chunk holds a row also says what its columns are ("what is X for Y" finds the row
and its column names together)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from indexes.text import is_han

ROWS_PER_GROUP = 8
GROUP_WEIGHT = 600  # characters a group may hold (a Chinese character counts twice): under a 384-token chunk


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return re.sub(r"\s+", " ", str(value)).strip().replace("|", "\\|")


def _weight(line: str) -> int:
    return len(line) + sum(1 for ch in line if is_han(ch))


def table_text(rows: Sequence[Sequence[object]], header_rows: int = 1) -> str:
    """``rows`` (the first ``header_rows`` of them the header) as Markdown row groups separated by blank lines; ""
    for a table with no text. Empty rows and columns are dropped."""
    cells = [[_cell(c) for c in row] for row in rows]
    cells = [row for row in cells if any(row)]
    if not cells:
        return ""
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    keep = [j for j in range(width) if any(row[j] for row in cells)]
    cells = [[row[j] for j in keep] for row in cells]
    n_head = min(header_rows, len(cells) - 1) if len(cells) > 1 else 1
    names = [" / ".join(dict.fromkeys(c for c in col if c)) for col in zip(*cells[:n_head])]
    head = "| " + " | ".join(n or " " for n in names) + " |\n|" + "---|" * len(names)
    groups: list[list[str]] = []
    weight = 0
    for row in cells[n_head:]:
        line = "| " + " | ".join(row) + " |"
        if not groups or len(groups[-1]) >= ROWS_PER_GROUP or weight + _weight(line) > GROUP_WEIGHT:
            groups.append([])
            weight = 0
        groups[-1].append(line)
        weight += _weight(line)
    if not groups:
        return head
    return "\n\n".join(head + "\n" + "\n".join(g) for g in groups)
