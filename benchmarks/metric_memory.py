"""Peak memory of anomalib's pixel metrics alone, at Magnetic Tile's test-set size (583 maps of 256 x 256 px).

Every model's job holds these metrics at test time, whatever its own footprint: the runner's ``peak_rss_mb``
includes them, ``fit_peak_rss_mb`` does not. Each metric runs in its own process (peak RSS is per process).

Usage: ``python benchmarks/metric_memory.py`` (writes ``benchmarks/results/metric_memory.md``)
"""

import subprocess
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "results" / "metric_memory.md"
NUM_MAPS = 583
CHILD = """
import resource, sys, time, torch
from anomalib.data import ImageBatch
from anomalib.metrics import AUPRO, AUROC

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

name, count = sys.argv[1], int(sys.argv[2])
metric = (AUROC if name == "pixel AUROC" else AUPRO)(fields=["anomaly_map", "gt_mask"], strict=False)
generator = torch.Generator().manual_seed(0)
before = rss()
for start in range(0, count, 32):
    size = min(32, count - start)
    masks = torch.zeros(size, 256, 256, dtype=torch.bool)
    masks[:, 100:140, 100:150] = True
    metric.update(ImageBatch(
        image=torch.zeros(size, 3, 256, 256), anomaly_map=torch.rand(size, 256, 256, generator=generator),
        gt_mask=masks, gt_label=torch.ones(size, dtype=torch.bool),
    ))
start = time.perf_counter()
metric.compute()
print(f"{before:.0f},{rss():.0f},{time.perf_counter() - start:.1f}")
"""


def main() -> None:
    lines = [
        "Command: `python benchmarks/metric_memory.py` (anomalib 2.7 metrics, random maps, one process each)",
        "",
        "| metric | maps | RSS after imports MB | peak RSS MB | compute s |",
        "|---|---|---|---|---|",
    ]
    for name in ("pixel AUROC", "AUPRO"):
        result = subprocess.run(
            [sys.executable, "-c", CHILD, name, str(NUM_MAPS)], capture_output=True, text=True, check=True
        )
        before, peak, seconds = result.stdout.strip().splitlines()[-1].split(",")
        lines.append(f"| {name} | {NUM_MAPS} | {before} | {peak} | {seconds} |")
    OUTPUT.write_text("\n".join(lines) + "\n")
    print(OUTPUT.read_text())


if __name__ == "__main__":
    main()
