"""Fit peak RSS of one runner job repeated in fresh processes (issue #8): how much identical runs differ.

Runs SSAD's ``compare_<dataset>`` job (same model, data, seed and Evaluator as the side-by-side table) several
times, each in a fresh process, optionally with extra environment variables (glibc's allocator settings,
e.g. ``MALLOC_MMAP_THRESHOLD_=4194304``), and appends one row per run: the commit measured, the quality metrics
(identical runs give identical metrics), the fit time and the fit peak RSS.

Usage (from the project root; rows are appended, the table rewritten)::

    python benchmarks/fit_memory.py --dataset bottle --seed 0 --repeats 3
    python benchmarks/fit_memory.py --dataset bottle --seed 0 --repeats 1 --env MALLOC_MMAP_THRESHOLD_=4194304
"""

import argparse
import subprocess
import tempfile
from pathlib import Path

from tables import read_rows, write_table

from anomalib_ssad.benchmark.runner import expand_jobs, load_config, run_in_subprocess

CONFIGS = Path(__file__).resolve().parent / "configs"
PROJECT = CONFIGS.parents[1]
OUTPUT = Path("benchmarks/results/fit_memory")
COLUMNS = (
    "commit",
    "dataset",
    "seed",
    "env",
    "image_AUROC",
    "pixel_AUROC",
    "pixel_AUPRO",
    "train_seconds",
    "fit_peak_rss_mb",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="bottle", help="compare_<dataset>.yaml in benchmarks/configs")
    parser.add_argument("--model", default="ssad", help="model name in that config")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE pairs set for the job's process")
    args = parser.parse_args()
    malformed = [pair for pair in args.env if "=" not in pair or pair.startswith("=")]
    if malformed:
        parser.error(f"--env expects NAME=VALUE pairs, got {malformed}")
    env = dict(pair.split("=", 1) for pair in args.env)
    config = load_config(CONFIGS / f"compare_{args.dataset}.yaml")
    jobs = [job for job in expand_jobs(config) if job.model["name"] == args.model and job.seed == args.seed]
    if len(jobs) != 1:
        raise SystemExit(f"no single {args.model!r} job with seed {args.seed} in compare_{args.dataset}.yaml")
    job = jobs[0]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    command = "`python benchmarks/fit_memory.py --dataset DATASET --seed SEED --repeats N [--env NAME=VALUE]`"
    commit = _commit()  # the code the jobs start from, read once before they run
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as scratch:
            job.output = scratch  # checkpoints and predictions are not kept
            result = run_in_subprocess(job, env)
        if result["status"] != "ok":
            raise SystemExit(result["error"])
        row = {key: result.get(key, "") for key in COLUMNS}
        row.update(commit=commit, dataset=result["dataset"], env=" ".join(args.env) or "(none)")
        for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
            row[key] = f"{float(result[key]):.4f}"
        print(row, flush=True)
        rows = [*read_rows(OUTPUT / "results.csv"), row]
        write_table(OUTPUT / "results.csv", COLUMNS, rows, command)


def _commit(root: Path = PROJECT) -> str:
    """The project's commit the run measured, ``+`` appended when its tracked files other than results changed."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return git("rev-parse", "--short", "HEAD") + ("+" if changed else "")


if __name__ == "__main__":
    main()
