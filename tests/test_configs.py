"""Every shipped anomalib config builds its model and datamodule with the arguments it names."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def build(spec: dict):
    module_name, _, class_name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**(spec.get("init_args") or {}))


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_builds(config, monkeypatch):
    spec = yaml.safe_load(config.read_text())
    assert set(spec) >= {"model", "data", "trainer"}
    model_args = spec["model"]["init_args"]
    if model_args.get("backbone") == "resnet18":  # no ResNet-18 weights offline: check the arguments only
        model_args = {**model_args, "pretrained": False}
    model = build({**spec["model"], "init_args": model_args})
    assert type(model).__name__ == spec["model"]["class_path"].rpartition(".")[2]
    datamodule = build(spec["data"])
    assert datamodule.category == spec["data"]["init_args"]["category"]


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_logs_metrics_to_a_csv_file(config, tmp_path):
    logger_spec = yaml.safe_load(config.read_text())["trainer"]["logger"]
    logger = build({**logger_spec, "init_args": {**logger_spec["init_args"], "save_dir": str(tmp_path)}})
    logger.log_metrics({"image_AUROC": 0.5}, step=0)
    logger.save()
    assert "image_AUROC" in (Path(logger.log_dir) / "metrics.csv").read_text()


BENCHMARK_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", BENCHMARK_CONFIGS, ids=[path.stem for path in BENCHMARK_CONFIGS])
def test_benchmark_config_names_real_models_arguments_and_data(config):
    """Every committed benchmark config (the README's commands) expands into jobs whose models take its arguments."""
    from anomalib_ssad.benchmark.runner import expand_jobs, load_config

    jobs = expand_jobs(load_config(config))
    assert jobs
    for job in jobs:
        module_name, _, class_name = job.model["class_path"].rpartition(".")
        model_class = getattr(importlib.import_module(module_name), class_name)
        parameters = inspect.signature(model_class.__init__).parameters
        unknown = set(job.model.get("init_args") or {}) - set(parameters)
        assert not unknown, f"{config.name}: {job.model['name']} does not take {sorted(unknown)}"
        root = job.dataset.get("init_args", {}).get("root")
        if root is not None and root.startswith("../shared/"):  # other roots are built by the benchmark script
            assert (config.parents[2] / root).is_dir(), f"{config.name}: no data at {root}"
