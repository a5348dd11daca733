"""Result tables of the benchmark scripts: one CSV and a Markdown copy headed by the command that wrote it."""

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of a results CSV written before (none if it does not exist yet)."""
    if not csv_path.exists():
        return []
    with csv_path.open(newline="") as file:
        return list(csv.DictReader(file))


def write_table(csv_path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]], command: str) -> None:
    """Write ``rows`` to ``csv_path`` and the same table as Markdown beside it (``.md``), under ``command``."""
    with csv_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        command,
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(row[key]) for key in columns) + " |" for row in rows),
    ]
    csv_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
