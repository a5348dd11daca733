"""Slow real-data regression floors (run with ``pytest -m slow``; CI runs them after the default suite).

Quality *targets* and timings live in benchmarks/; these floors only catch a model that stopped learning.
"""

import pytest

from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.slow


def _defaults_metrics(root: str, category: str, tmp_path, model_name: str = "SSAD") -> dict:
    """Fit and test an anomalib-ssad model with its defaults on ``../shared/data/<root>/<category>``."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    import anomalib_ssad

    datamodule = MVTecAD(root=SHARED_DATA / root, category=category, num_workers=0, seed=0)
    model = getattr(anomalib_ssad, model_name)(visualizer=False)
    engine = Engine(accelerator="cpu", devices=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model=model, datamodule=datamodule)
    return engine.test(model=model, datamodule=datamodule, verbose=False)[0]


@pytest.mark.skipif(not (SHARED_DATA / "mvtec_ad" / "bottle").is_dir(), reason="../shared/data not present")
def test_ssad_defaults_on_mvtec_bottle(tmp_path):
    metrics = _defaults_metrics("mvtec_ad", "bottle", tmp_path)
    assert metrics["image_AUROC"] >= 0.98
    assert metrics["pixel_AUROC"] >= 0.95
    assert metrics["pixel_AUPRO"] >= 0.80


@pytest.mark.skipif(not (SHARED_DATA / "kolektorsdd" / "kolektorsdd").is_dir(), reason="../shared/data not present")
def test_ssad_defaults_on_kolektorsdd_stay_above_patchcore(tmp_path):
    """KolektorSDD, where the previous default sat far below PatchCore (0.741 / 0.196 vs PatchCore 0.834 / 0.326)."""
    metrics = _defaults_metrics("kolektorsdd", "kolektorsdd", tmp_path)
    assert metrics["pixel_AUROC"] >= 0.834
    assert metrics["pixel_AUPRO"] >= 0.326


@pytest.mark.skipif(not (SHARED_DATA / "magnetic_tile" / "magnetic_tile").is_dir(), reason="../shared/data not present")
def test_ssad_defaults_on_magnetic_tile(tmp_path):
    """Magnetic Tile (761 training images of variable size, 583 test images): floors well below seed 0's
    0.934 / 0.745 / 0.627 (the 2 + 4 default, benchmarks/results/compare_magnetic_tile) that a model which
    stopped learning misses (random maps score about 0.5 / 0.5 / 0.1)."""
    metrics = _defaults_metrics("magnetic_tile", "magnetic_tile", tmp_path)
    assert metrics["image_AUROC"] >= 0.88
    assert metrics["pixel_AUROC"] >= 0.69
    assert metrics["pixel_AUPRO"] >= 0.52


@pytest.mark.skipif(not (SHARED_DATA / "kolektorsdd" / "kolektorsdd").is_dir(), reason="../shared/data not present")
def test_cutpaste_defaults_on_kolektorsdd_score_images_at_patchcore(tmp_path):
    """CutPaste's image score (the map's peak times the image's max-pooled Gaussian) at PatchCore's image AUROC
    less 0.01 (0.800 - 0.01); the peak alone, 0.5's image score, gave 0.784 on this seed (0.812 with it,
    benchmarks/results/compare_kolektorsdd). The pixel floors only catch maps that stopped working (0.816 / 0.299)."""
    metrics = _defaults_metrics("kolektorsdd", "kolektorsdd", tmp_path, model_name="CutPaste")
    assert metrics["image_AUROC"] >= 0.79
    assert metrics["pixel_AUROC"] >= 0.75
    assert metrics["pixel_AUPRO"] >= 0.25
