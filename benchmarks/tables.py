"""Result tables of the benchmark scripts: one CSV and a Markdown copy headed by the command that wrote it."""

import csv
import shlex
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


def seed_mean(group: Sequence[Mapping[str, Any]], metrics: Sequence[str], seconds: Sequence[str] = ()) -> dict:
    """The mean row of one setting's per-seed rows: ``seed`` reads ``mean of 0/1/2`` (the group's order).

    The other columns are the first row's; each of ``metrics`` is its mean to 3 digits, each of ``seconds`` to
    whole seconds.
    """

    def mean(key: str) -> float:
        return sum(float(row[key]) for row in group) / len(group)

    return {
        **group[0],
        "seed": "mean of " + "/".join(str(row["seed"]) for row in group),
        **{key: round(mean(key), 3) for key in metrics},
        **{key: round(mean(key)) for key in seconds},
    }


def rerun_command(script: str, **options: tuple[Any, Any]) -> str:
    """The command that reruns a results table: ``python benchmarks/<script>`` with the options that define it.

    A table's header names what defines it (its scorings, seeds, place), not which rows one run adds, so options
    that only pick rows (``--datasets``) are left out by the caller.

    Args:
        script: The script's file name.
        **options: ``name=(value, default)``: ``--name value`` where the value is not the default (``None``: always);
            a list gives one argument per item.
    """
    command = ["python", f"benchmarks/{script}"]
    for name, (value, default) in options.items():
        if default is None or value != default:
            command += [f"--{name}", *map(str, value if isinstance(value, list | tuple) else [value])]
    return shlex.join(command)
