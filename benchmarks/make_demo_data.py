"""Build the bundled demo subset of MVTec AD bottle from ../shared/data (rerun to regenerate it).

Usage: python benchmarks/make_demo_data.py [--source ../shared/data/mvtec_ad] [--size 256]

Takes every 7th training image and the first 5 test images of each type, resizes them to ``size`` px
(images with Lanczos, masks nearest) and copies the licence, so the demo trains in minutes on a CPU.
"""

import argparse
import shutil
from pathlib import Path

import cv2

DEST = Path(__file__).resolve().parents[1] / "anomalib_ssad" / "demo" / "mvtec_ad"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/mvtec_ad")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    source = args.source / "bottle"
    if not source.is_dir():
        raise SystemExit(f"{source}: no such folder (expected MVTec AD bottle in MVTec layout)")
    dest = DEST / "bottle"
    shutil.rmtree(dest, ignore_errors=True)
    picks = {"train/good": sorted((source / "train/good").glob("*.png"))[::7]}
    for defect_dir in sorted((source / "test").iterdir()):
        picks[f"test/{defect_dir.name}"] = sorted(defect_dir.glob("*.png"))[:5]
    for folder, files in picks.items():
        for file in files:
            _resize(file, dest / folder / file.name, cv2.INTER_AREA, args.size)
            defect = folder.split("/")[1]
            if folder.startswith("test/") and defect != "good":
                mask = source / "ground_truth" / defect / f"{file.stem}_mask.png"
                _resize(mask, dest / "ground_truth" / defect / mask.name, cv2.INTER_NEAREST, args.size)
    for name in ("license.txt", "readme.txt"):
        shutil.copy(source / name, dest / name)
    print({folder: len(files) for folder, files in picks.items()})


def _resize(src: Path, dst: Path, interpolation: int, size: int) -> None:
    image = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"{src}: unreadable image")
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), cv2.resize(image, (size, size), interpolation=interpolation))


if __name__ == "__main__":
    main()
