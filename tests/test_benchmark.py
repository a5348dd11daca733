"""The config-file benchmark runner: a tiny SSAD + PatchCore run on the bundled demo bottle at 64 px."""

import csv
import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import yaml

from anomalib_ssad.baselines import OfflinePatchcore
from anomalib_ssad.benchmark import load_config, run_benchmark, runner
from anomalib_ssad.benchmark.runner import example_indices
from anomalib_ssad.components.backbone import BackboneWeightsError, build_backbone
from tests.test_ssad_end_to_end import TINY_MODEL

FIGURES = ("roc", "metrics", "anomaly_maps", "tsne")


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory, demo_root):
    """One run of SSAD, OfflinePatchcore and a model that cannot be imported; returns (config path, rows)."""
    workdir = tmp_path_factory.mktemp("benchmark")
    config = {
        "output": str(workdir / "results"),
        "seeds": [0],
        "image_size": 64,
        "datasets": [
            {
                "name": "demo_bottle",
                "class_path": "anomalib.data.MVTecAD",
                "init_args": {"root": str(demo_root), "category": "bottle", "num_workers": 0, "eval_batch_size": 8},
            },
        ],
        "models": [
            {"name": "ssad", "class_path": "anomalib_ssad.SSAD", "init_args": TINY_MODEL},
            {"name": "missing", "class_path": "anomalib_ssad.NoSuchModel"},
            {
                "name": "patchcore",
                "class_path": "anomalib_ssad.baselines.OfflinePatchcore",
                "init_args": {"coreset_sampling_ratio": 0.01},
            },
        ],
    }
    config_path = workdir / "benchmark.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path, run_benchmark(config_path)


def test_run_writes_results_and_figures(benchmark_run):
    config_path, rows = benchmark_run
    output = config_path.parent / "results"
    with (output / "results.csv").open(newline="") as file:
        stored = {row["model"]: row for row in csv.DictReader(file)}
    assert [row["model"] for row in rows] == ["ssad", "missing", "patchcore"]
    for model in ("ssad", "patchcore"):
        row = stored[model]
        assert row["status"] == "ok", row["error"]
        for key in ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_AUPRO"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert float(row["train_seconds"]) > 0
        assert float(row["inference_images_per_second"]) > 0
        assert 100 < float(row["peak_rss_mb"]) < 20_000
        # Peak RSS only grows: fitting's peak is part of the job's.
        assert 0 < float(row["fit_peak_rss_mb"]) <= float(row["peak_rss_mb"])
    markdown = (output / "results.md").read_text()
    assert "| ssad | demo_bottle | 0 | ok |" in markdown
    for kind in FIGURES:
        assert (output / f"{kind}_demo_bottle.png").stat().st_size > 1000


def test_every_model_keeps_the_same_example_images(benchmark_run):
    config_path, rows = benchmark_run
    jobs = config_path.parent / "results" / "jobs"
    ssad, patchcore = (np.load(jobs / row["job"] / "predictions.npz") for row in rows if row["status"] == "ok")
    # The demo test set: 15 defective images, then 5 good ones.
    np.testing.assert_array_equal(ssad["example_index"], [0, 5, 9, 14, 15, 16, 18, 19])
    for predictions in (ssad, patchcore):
        np.testing.assert_array_equal(predictions["example_index"], ssad["example_index"])
        assert predictions["anomaly_map"].shape == (8, 64, 64)
        assert predictions["image"].shape == (8, 3, 64, 64)
        np.testing.assert_array_equal(predictions["gt_label"], [1] * 15 + [0] * 5)
    np.testing.assert_array_equal(ssad["image"], patchcore["image"])
    assert ssad["embedding"].shape[0] == 20
    assert "embedding" not in patchcore


def test_failing_job_is_recorded(benchmark_run):
    _, rows = benchmark_run
    failed = next(row for row in rows if row["model"] == "missing")
    assert failed["status"] == "failed"
    assert "cannot import 'anomalib_ssad.NoSuchModel'" in failed["error"]


def test_rerun_skips_finished_jobs(benchmark_run, monkeypatch, caplog):
    config_path, rows = benchmark_run

    def fail(job):
        pytest.fail(f"finished job {job.job_id} was run again")

    monkeypatch.setattr(runner, "run_in_subprocess", fail)
    with caplog.at_level("INFO", logger=runner.__name__):
        again = run_benchmark(config_path)
    assert [(row["job"], row["status"]) for row in again] == [(row["job"], row["status"]) for row in rows]
    assert sum("skip" in message for message in caplog.messages) == 3


def test_rerun_failed_runs_only_failed_jobs(benchmark_run, monkeypatch, tmp_path):
    config_path, _ = benchmark_run
    config = yaml.safe_load(config_path.read_text())
    copy_path = tmp_path / "copy.yaml"
    copy_path.write_text(yaml.safe_dump(config))
    launched = []

    def record(job):
        launched.append(job.model_name)
        return {"job": job.job_id, "model": job.model_name, "dataset": "demo_bottle", "seed": 0, "status": "failed"}

    monkeypatch.setattr(runner, "run_in_subprocess", record)
    run_benchmark(copy_path, rerun_failed=True)
    assert launched == ["missing"]


def test_run_in_subprocess_adds_env_to_the_jobs_process(monkeypatch, tmp_path):
    """benchmarks/fit_memory.py's allocator settings reach the job's process, on top of this process's environment."""
    seen = {}

    def fake_run(command, **kwargs):
        seen.update(kwargs["env"])
        return subprocess.CompletedProcess(command, 0, stdout=runner.RESULT_PREFIX + '{"job": "j"}\n')

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    job = runner.Job(model={"name": "m", "class_path": "a.M"}, dataset={"name": "d", "class_path": "a.D"}, seed=0)
    job.output = str(tmp_path)
    row = runner.run_in_subprocess(job, env={"MALLOC_MMAP_THRESHOLD_": "4194304"})
    assert row == {"job": "j", "status": "ok", "error": ""}
    assert seen["MALLOC_MMAP_THRESHOLD_"] == "4194304"
    assert seen["PATH"] == os.environ["PATH"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [", "cannot read benchmark config"),
        ("[1, 2]", "expected a mapping"),
        ("datasets: [{name: d, class_path: x}]\nmodels: []", "'models' must be a non-empty list"),
        ("datasets: [{name: d}]\nmodels: [{name: m, class_path: x}]", "datasets[0] needs 'name' and 'class_path'"),
    ],
)
def test_config_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"broken\.yaml") as error:
        load_config(path)
    assert message in str(error.value)


def test_example_indices_mix_defective_and_good():
    np.testing.assert_array_equal(example_indices(np.array([1] * 10 + [0] * 10), count=4), [0, 9, 10, 19])
    np.testing.assert_array_equal(example_indices(np.array([0, 0, 1, 1, 1, 1]), count=4), [0, 1, 2, 5])
    np.testing.assert_array_equal(example_indices(np.array([1, 1, 0]), count=8), [0, 1, 2])


def test_offline_patchcore_uses_imagenet_lite0_weights():
    model = OfflinePatchcore(layers=["blocks.2", "blocks.4"], coreset_sampling_ratio=0.02)
    extractor = model.model.feature_extractor.feature_extractor
    reference = build_backbone("efficientnet_lite0").body.state_dict()
    for key, tensor in extractor.state_dict().items():
        torch.testing.assert_close(tensor, reference[key], msg=key)
    assert model.coreset_sampling_ratio == 0.02
    # The checkpoint's hyperparameters rebuild the same class.
    assert OfflinePatchcore(**model.hparams).model.layers == ["blocks.2", "blocks.4"]


def test_offline_supersimplenet_uses_imagenet_lite0_weights_and_trains(tmp_path, demo_root):
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    from anomalib_ssad.baselines import OfflineSuperSimpleNet

    model = OfflineSuperSimpleNet()  # 256 px: its feature-space Perlin masks need a 32 x 32 feature map
    extractor = model.model.feature_extractor.feature_extractor.feature_extractor
    reference = build_backbone("efficientnet_lite0").body.state_dict()
    for key, tensor in extractor.state_dict().items():
        torch.testing.assert_close(tensor, reference[key], msg=key)
    assert set(OfflineSuperSimpleNet(**model.hparams).hparams) == set(model.hparams)
    datamodule = MVTecAD(root=demo_root, category="bottle", num_workers=0, train_batch_size=8, eval_batch_size=8)
    engine = Engine(accelerator="cpu", devices=1, max_epochs=1, logger=False, default_root_dir=tmp_path)
    engine.fit(model=model, datamodule=datamodule)
    metrics = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    assert {"image_AUROC", "pixel_AUROC"} <= set(metrics)


def test_offline_patchcore_missing_weights_file(tmp_path):
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        OfflinePatchcore(weights_path=str(tmp_path / "missing.pth"))


def test_figures_and_table_of_a_model_without_anomaly_maps(tmp_path):
    """GANomaly-like jobs (image scores only, NaN pixel metrics) are drawn next to full ones."""
    rng = np.random.default_rng(0)
    labels = np.array([1] * 6 + [0] * 6)
    examples = example_indices(labels, count=4)
    shared = {"gt_label": labels, "example_index": examples, "image": rng.random((4, 3, 16, 16), dtype=np.float32)}
    shared["gt_mask"] = (shared["image"][:, 0] > 0.5).astype(np.uint8)
    jobs = {
        "full": {**shared, "anomaly_map": rng.random((4, 16, 16)), "embedding": rng.random((12, 5))},
        "image_only": shared,
    }
    rows = []
    for name, predictions in jobs.items():
        (tmp_path / "jobs" / name).mkdir(parents=True)
        np.savez(tmp_path / "jobs" / name / "predictions.npz", pred_score=rng.random(12), **predictions)
        pixel = "0.5" if name == "full" else "nan"
        metrics = {"image_AUROC": "0.5", "image_F1Score": "0.5", "pixel_AUROC": pixel, "pixel_AUPRO": pixel}
        rows.append({"job": name, "model": name, "dataset": "d", "seed": "0", "status": "ok", **metrics})
    rows.append({"job": "broken", "model": "broken", "dataset": "d", "seed": "0", "status": "failed", "error": "x"})
    written = runner.write_figures(rows, tmp_path)
    assert sorted(path.name for path in written) == sorted(f"{kind}_d.png" for kind in FIGURES)
    runner.write_markdown(rows, tmp_path / "results.md", "command")
    assert "| image_only | d | 0 | ok | 0.500 | 0.500 | n/a | n/a |" in (tmp_path / "results.md").read_text()


def test_jobs_take_per_dataset_image_sizes_and_per_model_seeds(tmp_path):
    config_path = tmp_path / "grid.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "seeds": [0, 1, 2],
                "image_size": 256,
                "datasets": [
                    {"name": "square", "class_path": "x.D"},
                    {"name": "wide", "class_path": "x.D", "image_size": [256, 640]},
                ],
                "models": [
                    {"name": "ssad", "class_path": "x.M"},
                    {"name": "patchcore", "class_path": "x.P", "seeds": [0]},
                    {"name": "slow", "class_path": "x.S", "seeds": [0], "datasets": ["square"]},
                ],
            }
        )
    )
    jobs = runner.expand_jobs(load_config(config_path))
    assert [(job.model_name, job.dataset["name"], job.seed) for job in jobs] == [
        *[("ssad", "square", seed) for seed in (0, 1, 2)],
        *[("ssad", "wide", seed) for seed in (0, 1, 2)],
        ("patchcore", "square", 0),
        ("patchcore", "wide", 0),
        ("slow", "square", 0),  # a model that names its datasets runs on those only
    ]
    assert {job.dataset["name"]: job.image_hw for job in jobs} == {"square": (256, 256), "wide": (256, 640)}
    bad = "datasets: [{name: d, class_path: x, image_size: [256]}]\nmodels: [{name: m, class_path: x}]"
    config_path.write_text(bad)
    with pytest.raises(ValueError, match=r"image_size must be a positive int or \[height, width\]"):
        runner.expand_jobs(load_config(config_path))


def test_job_seed_reaches_the_model_seed(monkeypatch):
    """run_job passes the job's seed as the model's own seed unless the config sets one."""
    built = {}

    class StopError(Exception):
        pass

    class FakeModel:
        def __init__(self, seed=0, pre_processor=None, evaluator=None, visualizer=None):
            built["seed"] = seed
            raise StopError

        @staticmethod
        def configure_pre_processor(image_size):
            return None

    monkeypatch.setattr(runner, "_load_class", lambda path: FakeModel)
    for init_args, expected in (({}, 2), ({"seed": 7}, 7)):
        model = {"name": "m", "class_path": "x.M", "init_args": init_args}
        with pytest.raises(StopError):
            runner.run_job(runner.Job(model=model, dataset={"name": "d", "class_path": "x.D"}, seed=2))
        assert built["seed"] == expected


def test_folder_dataset_without_masks_gets_image_metrics_and_timing(tmp_path, demo_root):
    """anomalib's Folder with no mask_dir: image metrics filled, pixel metrics n/a, batch-1 latency measured."""
    config = {
        "output": str(tmp_path / "results"),
        "seeds": [0],
        "image_size": 64,
        "datasets": [
            {
                "name": "bottle_folder",
                "class_path": "anomalib.data.Folder",
                "init_args": {
                    "name": "bottle_folder",
                    "root": str(demo_root / "bottle"),
                    "normal_dir": "train/good",
                    "abnormal_dir": "test/broken_large",
                    "normal_test_dir": "test/good",
                    "num_workers": 0,
                    "eval_batch_size": 8,
                },
            },
        ],
        "models": [{"name": "ssad", "class_path": "anomalib_ssad.SSAD", "init_args": TINY_MODEL}],
    }
    config_path = tmp_path / "folder.yaml"
    config_path.write_text(yaml.safe_dump(config))
    (row,) = run_benchmark(config_path)
    assert row["status"] == "ok", row["error"]
    assert 0.0 <= float(row["image_AUROC"]) <= 1.0
    assert np.isnan(float(row["pixel_AUROC"])) and np.isnan(float(row["pixel_AUPRO"]))
    assert float(row["latency_ms_batch1"]) > 0 and float(row["inference_images_per_second"]) > 0
    assert "| n/a |" in (tmp_path / "results" / "results.md").read_text()


def test_inference_runs_on_the_jobs_accelerator():
    assert runner.inference_device("cpu") == torch.device("cpu")
    assert runner.inference_device("gpu") == torch.device("cuda")
    assert runner.inference_device("cuda") == torch.device("cuda")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runner.inference_device("auto").type == expected


def _benchmark_script(name: str) -> ModuleType:
    """Import a script of benchmarks/ (they import their sibling ``tables`` module by plain name)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_defect_type_breakdown_groups_by_folder_and_weighs_pixels():
    """benchmarks/defect_types.py: each type is scored against the defect-free images, its pixel share exact."""
    breakdown = _benchmark_script("defect_types").breakdown
    masks = torch.zeros(5, 16, dtype=torch.bool)
    masks[1, :4] = True  # "crack": 4 defect pixels
    masks[2, :12] = True  # "uneven": 12 defect pixels, found nowhere by the map below
    masks[3, :12] = True
    maps = torch.zeros(5, 16)
    maps[0] = 0.1  # a defect-free image, uniformly low
    maps[4] = 0.2
    maps[1, :4] = 1.0  # the crack lights up exactly
    maps[2:4, 12:] = 0.9  # the uneven maps light up their normal part only
    predicted = {
        "map": maps,
        "mask": masks,
        "label": torch.tensor([False, True, True, True, False]),
        "type": ["good", "crack", "uneven", "uneven", "good"],
    }
    rows = {row["defect_type"]: row for row in breakdown("m", predicted)}
    assert list(rows) == ["crack", "uneven", "all defect types"]
    assert (rows["crack"]["images"], rows["uneven"]["images"]) == (1, 2)
    assert rows["crack"]["defect_pixel_share"] == pytest.approx(4 / 28, abs=1e-3)
    assert rows["uneven"]["defect_pixel_share"] == pytest.approx(24 / 28, abs=1e-3)
    assert rows["crack"]["pixel_AUROC"] == 1.0
    assert rows["uneven"]["pixel_AUROC"] < 0.5
    assert rows["uneven"]["image_AUROC"] == 1.0  # found as images, not located


def test_fit_memory_repeats_the_compare_job_with_its_environment(monkeypatch, tmp_path, capsys):
    """benchmarks/fit_memory.py runs SSAD's seed-0 job of compare_bottle.yaml, once per repeat, with --env."""
    fit_memory = _benchmark_script("fit_memory")
    calls = []

    def fake_run(job, env):
        calls.append((job.model["name"], job.dataset["name"], job.seed, env))
        metrics = {"image_AUROC": 1.0, "pixel_AUROC": 0.97, "pixel_AUPRO": 0.89}
        return {"dataset": job.dataset["name"], "status": "ok", **metrics, "train_seconds": 1.0, "fit_peak_rss_mb": 7}

    monkeypatch.setattr(fit_memory, "run_in_subprocess", fake_run)
    monkeypatch.setattr(fit_memory, "OUTPUT", tmp_path)
    argv = ["fit_memory.py", "--dataset", "bottle", "--repeats", "2", "--env", "MALLOC_MMAP_THRESHOLD_=4194304"]
    monkeypatch.setattr(sys, "argv", argv)
    fit_memory.main()
    assert calls == [("ssad", "mvtec_bottle", 0, {"MALLOC_MMAP_THRESHOLD_": "4194304"})] * 2
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [row["env"] for row in rows] == ["MALLOC_MMAP_THRESHOLD_=4194304"] * 2
    assert rows[0]["fit_peak_rss_mb"] == "7" and rows[0]["pixel_AUPRO"] == "0.8900"
    monkeypatch.setattr(sys, "argv", ["fit_memory.py", "--env", "MALLOC_MMAP_THRESHOLD_"])
    with pytest.raises(SystemExit):
        fit_memory.main()
    assert "--env expects NAME=VALUE pairs, got ['MALLOC_MMAP_THRESHOLD_']" in capsys.readouterr().err
    assert len(calls) == 2


def test_fit_memory_commit_is_marked_changed_by_code_not_by_its_own_results(tmp_path):
    """benchmarks/fit_memory.py: a run's own rows in benchmarks/results do not mark the next run's commit ``+``."""
    fit_memory = _benchmark_script("fit_memory")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "rows.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    commit = fit_memory._commit(tmp_path)
    (tmp_path / "benchmarks" / "results" / "rows.csv").write_text("a\nb\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert fit_memory._commit(tmp_path) == commit and not commit.endswith("+")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert fit_memory._commit(tmp_path) == commit + "+"


def test_cutpaste_features_table_appends_seed_means_and_reads_back_only_seed_rows(tmp_path):
    """benchmarks/cutpaste_features.py: one mean row per dataset, schedule and scored feature with several seeds."""
    script = _benchmark_script("cutpaste_features")
    training = next(iter(script.TRAININGS))
    rows = [
        {"dataset": "kolektorsdd", "training": training, "seed": seed, "scored_features": "head", "scorer": "gaussian"}
        | {"fit_seconds": 10}
        | dict(zip(script.METRICS, values, strict=True))
        for seed, values in ((0, (0.5, 0.7, 0.2)), (1, (0.7, 0.8, 0.4)))
    ]
    rows.append({**rows[0], "scorer": "knn"})  # one seed only: no mean row
    script._write(tmp_path, rows, "python benchmarks/cutpaste_features.py --output x")
    assert (
        (tmp_path / "results.md").read_text().startswith("Command: `python benchmarks/cutpaste_features.py --output x`")
    )
    means = [row for row in script.read_rows(tmp_path / "results.csv") if row["seed"].startswith("mean")]
    assert [(row["seed"], row["scored_features"], row["scorer"]) for row in means] == [
        ("mean of 0/1", "head", "gaussian")
    ]
    assert [float(means[0][name]) for name in script.METRICS] == [0.6, 0.75, 0.3]
    assert len(script._rows(tmp_path)) == 3
    assert (
        "| kolektorsdd | " + training + " | mean of 0/1 | head | gaussian | 0.6 | 0.75 | 0.3 | 10 |"
        in (tmp_path / "results.md").read_text()
    )


def test_cutpaste_features_bank_draws_scoring_averages_three_k_nn_banks_beside_the_gaussian():
    """benchmarks/cutpaste_features.py's knn3+gaussian: the default's parts, its k-NN half a bag of 3 draws."""
    from anomalib_ssad.components.scorers import CellScorer, GaussianScorer, ScorerBag
    from anomalib_ssad.models.cutpaste.torch_model import build_cutpaste_network

    script = _benchmark_script("cutpaste_features")
    network = build_cutpaste_network(backbone="resnet18", pretrained=False, scored_features="backbone+head")
    default = script.build_scorer("knn+gaussian", network)
    bank_draws = script.build_scorer("knn3+gaussian", network)
    assert bank_draws.part_sizes == default.part_sizes == network.scored_part_sizes
    bag, gaussian = bank_draws.scorers
    assert isinstance(bag, ScorerBag) and isinstance(gaussian, GaussianScorer)
    assert len(bag.members) == script.BANK_DRAWS == 3
    assert all(isinstance(member, CellScorer) for member in bag.members)
    assert ("backbone+head", "knn3+gaussian") not in script.SCORINGS  # run only when named


def test_cutpaste_features_combined_scorings_take_the_default_parts_mean_min_or_geometric_mean():
    """benchmarks/cutpaste_features.py: knn+gaussian as measured (mean), the package's min, the probe's geomean."""
    import torch

    from anomalib_ssad.models.cutpaste.torch_model import build_cutpaste_network

    script = _benchmark_script("cutpaste_features")
    network = build_cutpaste_network(backbone="resnet18", pretrained=False, scored_features="backbone+head")
    mean, least = script.build_scorer("knn+gaussian", network), script.build_scorer("min(knn, gaussian)", network)
    geomean = script.build_scorer("geomean(knn, gaussian)", network)
    assert (mean.combine, least.combine, geomean.parts.combine) == ("mean", "min", "mean")
    rows = torch.rand(400, sum(network.scored_part_sizes), generator=torch.Generator().manual_seed(0))
    geomean.fit([rows], generator=torch.Generator().manual_seed(1))
    relative = torch.stack(
        [
            member([part]) / unit
            for member, part, unit in zip(
                geomean.parts.scorers, rows[:8].split(network.scored_part_sizes, 1), geomean.parts.scale, strict=True
            )
        ],
        dim=1,
    )
    torch.testing.assert_close(geomean([rows[:8]]), relative.prod(dim=1).sqrt())
    assert not {("backbone+head", "min(knn, gaussian)"), ("backbone+head", "geomean(knn, gaussian)")} & set(
        script.SCORINGS
    )


def test_standardised_probe_scorings_shift_and_scale_each_part_by_its_held_out_normal_scores():
    """The probes' zmean (CutPaste's two parts) and standardised cells (SSAD's two distances): per-part z-scores."""
    import torch

    from anomalib_ssad.components.scorers import CellScorer, _hold_out_rows
    from anomalib_ssad.models.cutpaste.torch_model import build_cutpaste_network

    network = build_cutpaste_network(backbone="resnet18", pretrained=False, scored_features="backbone+head")
    zmean = _benchmark_script("cutpaste_features").build_scorer("zmean(knn, gaussian)", network)
    cells = _benchmark_script("fitting").StandardizedScores(CellScorer((3, 3), capacity=64))
    assert cells.max_fit_rows == cells.scorer.max_fit_rows  # SSAD's collection of normal cells stays bounded
    for scorer, width in ((zmean, sum(network.scored_part_sizes)), (cells, 6)):
        rows = torch.rand(600, width, generator=torch.Generator().manual_seed(0))
        scorer.fit([rows], generator=torch.Generator().manual_seed(1))
        # The first draw of the generator picks the held-out rows; the parts are fitted on the others.
        held, _ = _hold_out_rows(600, 20000, torch.Generator().manual_seed(1), rows.device)
        if scorer is zmean:
            relative = zmean.scorer.relative_scores([rows[held]])
            fresh = zmean.scorer.relative_scores([rows[:8]])
        else:
            relative = torch.stack(cells.scorer._distances(rows[held]), dim=1) / cells.scorer.scale
            fresh = torch.stack(cells.scorer._distances(rows[:8]), dim=1) / cells.scorer.scale
        torch.testing.assert_close(scorer.shift, relative.mean(dim=0))
        torch.testing.assert_close(scorer.spread, relative.std(dim=0))
        assert not torch.allclose(scorer.spread[0], scorer.spread[1])  # the parts spread differently: it matters
        torch.testing.assert_close(scorer([rows[:8]]), ((fresh - scorer.shift) / scorer.spread).mean(dim=1))


def test_cutpaste_features_trainings_are_cutpaste_arguments_that_change_the_schedule_or_pretext_task():
    """Every schedule of benchmarks/cutpaste_features.py builds a CutPaste with exactly its arguments set."""
    from anomalib_ssad import CutPaste

    script = _benchmark_script("cutpaste_features")
    default, *others = script.ALL_TRAININGS.values()
    assert default == {} and set(script.EXTRA_TRAININGS).isdisjoint(script.TRAININGS)
    for arguments in others:
        model = CutPaste(backbone="resnet18", pretrained=False, **arguments)
        assert arguments and {name: model.hparams[name] for name in arguments} == arguments
    assert CutPaste(backbone="resnet18", pretrained=False, warmup_epochs=8).max_epochs == 8


def test_cutpaste_features_readme_command_runs_the_named_scorings_into_its_own_table(monkeypatch, tmp_path):
    """The README's bank-draws command: one schedule, the two named scorings, a header that reruns that table."""
    script = _benchmark_script("cutpaste_features")
    training = "2 head-only epochs (backbone frozen)"
    output = tmp_path / "cutpaste_bank_draws"
    arguments = ["--trainings", training, "--scorings", "backbone+head/knn+gaussian", "backbone+head/knn3+gaussian"]
    calls = []
    monkeypatch.setattr(script, "run", lambda *args: calls.append(args))
    monkeypatch.setattr(sys, "argv", ["cutpaste_features.py", *arguments, "--output", str(output), "--seeds", "1"])
    script.main()
    scorings = (("backbone+head", "knn+gaussian"), ("backbone+head", "knn3+gaussian"))
    command = shlex.join(["python", "benchmarks/cutpaste_features.py", *arguments, "--output", str(output)])
    assert calls == [(dataset, training, 1, output, scorings, command) for dataset in script.DATASETS]


@pytest.mark.parametrize(
    ("name", "output_index", "header_index", "tables"),
    [
        ("cutpaste_features", 3, 5, 4),  # the ablation, the bank draws, the training probe, the combined scores
        ("cutpaste_image_score", 2, 3, 1),
        ("part_choice", 2, 3, 1),
    ],
)
def test_benchmark_commands_in_the_readme_rerun_the_tables_they_cite(
    monkeypatch, tmp_path, name, output_index, header_index, tables
):
    """Each README command of a probe script runs into a committed table whose header names that command."""
    project = Path(__file__).resolve().parents[1]
    script = _benchmark_script(name)
    readme = (project / "README.md").read_text()
    pattern = rf"`(python benchmarks/{name}\.py[^`]*)`"
    commands = {" ".join(found.split()) for found in re.findall(pattern, readme)}
    assert len(commands) >= tables
    monkeypatch.chdir(tmp_path)
    for command in commands:
        calls = []
        monkeypatch.setattr(script, "run", lambda *args, calls=calls: calls.append(args))
        monkeypatch.setattr(sys, "argv", shlex.split(command)[1:])
        script.main()
        output, header = calls[0][output_index], calls[0][header_index]
        assert {call[output_index] for call in calls} == {output} and {call[header_index] for call in calls} == {header}
        table = (project / output / "results.md").read_text()
        assert table.startswith(f"Command: `{header}`"), command


def test_ablation_scripts_fit_a_plugin_model_as_the_runner_does(tmp_path, demo_root):
    """benchmarks/fitting.py: the runner's Evaluator, no visualizer, the scorer fitted, the model's own arguments."""
    from anomalib_ssad import CutPaste
    from anomalib_ssad.benchmark.runner import shared_evaluator

    tiny = {"warmup_epochs": 1, "finetune_epochs": 0, "samples_per_epoch": 8, "batch_size": 8, "seed": 3}
    model, engine, datamodule, seconds = _benchmark_script("fitting").fit(
        CutPaste, tiny, (demo_root, "bottle"), (64, 64), tmp_path / "jobs"
    )
    assert model.model.scorer.scorers[1].density.is_fitted  # the default: k-NN of the stages, Gaussian of the head
    assert (model.seed, model.max_epochs, engine.trainer.current_epoch) == (3, 1, 1)
    assert model.visualizer is None
    assert [type(metric) for metric in model.evaluator.test_metrics] == [
        type(metric) for metric in shared_evaluator().test_metrics
    ]
    assert datamodule.category == "bottle" and seconds > 0


def test_refit_scorer_refits_the_post_processors_normalisation(tmp_path, demo_root):
    """benchmarks/fitting.py: scores on another scale get their own min / max, not the old ones (clipped)."""
    from anomalib_ssad import CutPaste

    fitting = _benchmark_script("fitting")
    tiny = {"warmup_epochs": 1, "finetune_epochs": 0, "samples_per_epoch": 8, "batch_size": 8, "seed": 3}
    # The paper's scoring (a Gaussian of the head), then the same Gaussian of the backbone's stages.
    tiny |= {"scorer": "gaussian", "scored_features": "head"}
    model, engine, datamodule, _ = fitting.fit(CutPaste, tiny, (demo_root, "bottle"), (64, 64), tmp_path / "jobs")
    head_max = float(model.post_processor.image_max)
    model.model.scored_features = "backbone"
    fitting.refit_scorer(model, engine, datamodule)
    model.eval()
    with torch.no_grad():
        scores = torch.cat(
            [
                model.model(model.pre_processor.transform(batch.image)).pred_score
                for batch in datamodule.val_dataloader()
            ]
        )
    assert float(model.post_processor.image_max) == pytest.approx(float(scores.max()), rel=1e-5)
    assert float(model.post_processor.image_max) != pytest.approx(head_max, rel=1e-2)


def test_summary_files_each_dataset_of_a_results_table_apart(monkeypatch, tmp_path):
    """benchmarks/summarize.py: one config may hold several datasets; each is summarised and checked on its own."""
    summarize = _benchmark_script("summarize")
    folder = tmp_path / "compare_two_sizes"
    folder.mkdir()
    columns = ["model", "dataset", "seed", "status", "image_AUROC", "pixel_AUROC", "pixel_AUPRO"]
    rows = [
        ("ssad", "small", 0, 0.90, 0.90, 0.50),
        ("ssad", "small", 1, 0.80, 0.89, 0.40),
        ("patchcore", "small", 0, 0.80, 0.80, 0.30),
        ("ssad", "large", 0, 0.70, 0.70, 0.20),
        ("patchcore", "large", 0, 0.90, 0.90, 0.60),
    ]
    lines = [",".join(columns)] + [f"{m},{d},{s},ok,{i},{p},{a}" for m, d, s, i, p, a in rows]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(summarize, "RESULTS", tmp_path)
    text = summarize.summarise()
    assert "| small | ssad | 2 | 0.850 ± 0.071 | 0.895 ± 0.007 | 0.450 ± 0.071 |" in text
    assert "| large | ssad | 1 | 0.700 | 0.700 | 0.200 |" in text
    assert "- small, ssad: image AUROC >= PatchCore - 0.01: yes, pixel AUROC >= PatchCore: yes" in text
    assert "- large, ssad: image AUROC >= PatchCore - 0.01: **no**, pixel AUROC >= PatchCore: **no**" in text


def test_cutpaste_image_score_auroc_ranks_large_raw_scores():
    """Mahalanobis distances far above 1 keep their order (torchmetrics alone would take them for logits: ties)."""
    auroc = _benchmark_script("fitting").auroc  # the probes' AUROC (cutpaste_image_score, part_choice)
    labels = torch.tensor([0, 0, 1, 1])
    assert auroc(torch.tensor([40.0, 41.0, 42.0, 43.0]), labels) == 1.0
    assert auroc(torch.tensor([43.0, 42.0, 41.0, 40.0]), labels) == 0.0


def test_cutpaste_image_score_adds_peak_and_image_gaussian_in_normal_units():
    """Each combined score is peak / normal peak + Gaussian / held-out normal Gaussian score, per pooling."""
    script = _benchmark_script("cutpaste_image_score")
    generator = torch.Generator().manual_seed(0)
    train = {"peak": torch.full((200,), 2.0), "top": torch.ones(200, 3)}
    train |= {pooling: torch.randn(200, 6, generator=generator) for pooling in script.POOLINGS}
    far = torch.stack([torch.zeros(6), torch.full((6,), 5.0)])
    test = {"peak": torch.tensor([2.0, 2.0]), "top": torch.ones(2, 3), "mean": far, "max": far.flip(0)}
    scores = script.image_scores(train, test)
    assert list(scores) == list(script.IMAGE_SCORES)
    assert scores["peak of the smoothed map"].tolist() == [2.0, 2.0]
    assert scores["image Gaussian, mean-pooled stages"][1] > 5 * scores["image Gaussian, mean-pooled stages"][0]
    assert scores["image Gaussian, max-pooled stages"][0] > 5 * scores["image Gaussian, max-pooled stages"][1]
    for pooling in script.POOLINGS:
        unit = script.held_out_gaussian_scores(train[pooling], torch.Generator().manual_seed(0)).mean()
        expected = 1.0 + scores[f"image Gaussian, {pooling}-pooled stages"] / unit
        assert torch.allclose(scores[f"peak + image Gaussian, {pooling}-pooled"], expected)


def test_cutpaste_image_score_holds_each_training_row_out_of_its_own_gaussian():
    """An outlying training row scores higher held out than by a Gaussian fitted with it."""
    script = _benchmark_script("cutpaste_image_score")
    rows = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    rows[7] = 6.0
    held_out = script.held_out_gaussian_scores(rows, torch.Generator().manual_seed(0))
    fitted = script.GaussianScorer()
    fitted.fit([rows])
    assert held_out[7] > fitted([rows])[7]
    assert held_out.shape == (50,)


def test_cutpaste_image_score_table_appends_seed_means():
    """Each dataset and image score with more than one seed gets a mean row after its seeds' rows."""
    with_means = _benchmark_script("cutpaste_image_score").with_means
    rows = [
        {
            "dataset": "kolektorsdd",
            "seed": seed,
            "image_score": "top 1% of map",
            "image_AUROC": auroc,
            "fit_seconds": 80,
        }
        for seed, auroc in (("1", "0.7"), ("0", "0.8"))
    ]
    rows.append(
        {"dataset": "mvtec_bottle", "seed": "0", "image_score": "peak of the smoothed map", "image_AUROC": "1.0"}
    )
    table = with_means(rows)
    assert [(row["dataset"], row["seed"]) for row in table] == [
        ("mvtec_bottle", "0"),
        ("kolektorsdd", "0"),
        ("kolektorsdd", "1"),
        ("kolektorsdd", "mean of 0/1"),
    ]
    assert table[-1]["image_AUROC"] == 0.75


def test_part_choice_maps_at_the_default_weight_are_the_networks_own_maps():
    """benchmarks/part_choice.py: part maps weighted as the default (half each) give the network's map and score."""
    from types import SimpleNamespace

    from anomalib_ssad.models.cutpaste.torch_model import build_cutpaste_network
    from anomalib_ssad.models.ssad.torch_model import build_ssad_network

    script = _benchmark_script("part_choice")
    torch.manual_seed(0)
    ssad = build_ssad_network(backbone="resnet18", pretrained=False, memory_bank_size=64)
    cutpaste = build_cutpaste_network(
        backbone="resnet18",
        pretrained=False,
        scored_features="backbone+head",
        scorer="knn+gaussian",
        image_score="peak*image_gaussian",
        patch_size=32,
        patch_stride=16,
    )
    for network in (ssad, cutpaste):
        normal = torch.rand(6, 3, 64, 64)
        network.eval().scorer.fit(network.normal_embeddings(normal), torch.Generator().manual_seed(0))
        if network.image_scorer is not None:  # CutPaste's default: the peak times the image's Gaussian score
            network.image_scorer.fit([network.image_features(normal)])
        images = torch.rand(2, 3, 64, 64)
        maps, factor = script.part_maps(SimpleNamespace(model=network), images)
        assert maps.shape == (2, 2, 64, 64) and not torch.allclose(maps[:, 0], maps[:, 1])
        with torch.no_grad():
            expected = network(images)
        torch.testing.assert_close(maps.mean(dim=1, keepdim=True), expected.anomaly_map)
        torch.testing.assert_close(maps.mean(dim=1).flatten(1).amax(1) * factor, expected.pred_score, rtol=1e-5, atol=0)


def test_part_choice_smooth_defects_change_the_masked_region_only():
    """benchmarks/part_choice.py: the family neither model trains on brightens, darkens or blurs the region."""
    script = _benchmark_script("part_choice")
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    masks = torch.zeros(6, 1, 32, 32)
    masks[:, :, 8:20, 10:24] = 1
    drawn = script.smooth_defects(images, masks, torch.Generator().manual_seed(0))
    changed = (drawn - images).abs() > 1e-6
    assert not changed[(masks == 0).expand_as(changed)].any()
    assert changed[:, :, 8:20, 10:24].float().mean(dim=(1, 2, 3)).min() > 0.9  # every region, every image
