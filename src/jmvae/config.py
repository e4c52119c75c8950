"""The configuration of a run: TrainConfig (one field per CLI flag, each model's options among them), and
`read_config` / `run_config`, the one reader of a run's config.json.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from . import trackers
from .data.attributes import PRESETS, SPLIT_PRESETS
from .data.mnist import SOURCES
from .data.mnist_a import SPLITS
from .errors import UserError
from .modalities import IMAGE_LIKELIHOODS
from .models import MODELS, options, paper
from .models.jmvae import IMAGE_TARGETS
from .networks import GLYPH_DECODERS, IMAGE_DECODERS, IMAGE_NETWORKS, PLACEMENT_STRIDES
from .runs import FINISHED, is_finished
from .samplers import SAMPLERS


@dataclass(frozen=True)
class ConvDefault:
    """A preset's default that holds only for `models`, with conv images and without --paper (where it was
    measured); elsewhere the option keeps the model's own default."""

    value: Any
    models: tuple[str, ...]

    def holds(self, cfg: TrainConfig) -> bool:
        return cfg.model in self.models and cfg.image_network != "mlp" and not cfg.paper

    def __str__(self) -> str:
        return f"{'/'.join(self.models)} {self.value}, conv images, not with --paper"


# What a preset changes where no flag is given (before --paper and the model's own defaults): MNIST-A takes
# the TELBO paper's settings (z = 10, attribute weight 50) and JMVAE's published objective, whose subset KLs
# and image term cost more than they buy on four attributes (docs/results-mnist-a.md). A user's data (--data)
# starts from the same settings with z = 16: its images vary in more ways than the attributes say (place,
# background), and at z = 10 one seed of the tutorial drew colour and fill below the bar
# (docs/results-own-data.md). The PolyMNIST-style preset (five colour images of one digit) starts there too.
# MNIST-A's JMVAE reads each conv image through one trunk (--shared-trunk), and draws it with the posed
# decoder: a glyph that z places, turns and scales draws the digit asked for where the conv decoder drew it
# half the time; laid every 2 pixels, not 4, it draws the strokes finer (docs/results-mnist-a.md).
OWN_DATA = "--data"

PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    OWN_DATA: {
        "z_dim": 16,
        "attribute_weight": 50.0,
        "prior_recon": 0.0,
        "every_subset": False,
        "image_recon": 0.0,
    },
    "mnist-a": {
        "z_dim": 10,
        "attribute_weight": 50.0,
        "prior_recon": 0.0,
        "every_subset": False,
        "image_recon": 0.0,
        "shared_trunk": ConvDefault(True, ("jmvae",)),
        "image_decoder": ConvDefault("posed", ("jmvae",)),
        "image_network": ConvDefault("conv3-light", ("jmvae",)),
        "placement_stride": ConvDefault(2, ("jmvae",)),
    },
}
PRESET_DEFAULTS["polymnist"] = PRESET_DEFAULTS[OWN_DATA]
# A preset's length with a glyph decoder (placed, posed), by the image's recipe (None: any other), where it
# differs from the dataset's: on MNIST-A each about the float32 minutes of 6 passes of the conv decoder
# (docs/results-mnist-a.md).
GLYPH_EPOCHS = {("mnist-a", "conv3-light"): 13, ("mnist-a", None): 9}
# The batch and step size where no flag gives them: the founding experiment trains its 20 epochs at batch 256
# and lr 1.5e-3 (half the steps of batch 128, the same answers: docs/results-queries.md); the other presets
# and --paper keep batch 128 and lr 1e-3, where their results were measured.
TRAINING_DEFAULTS = {"batch_size": 256, "lr": 1.5e-3}
PAPER_TRAINING = {"batch_size": 128, "lr": 1e-3}
PRESET_TRAINING: dict[str, dict[str, Any]] = {
    "mnist-a": PAPER_TRAINING,
    "mnist-label": PAPER_TRAINING,
    "polymnist": PAPER_TRAINING,
}
LATER_OPTIONS = {
    "prior_recon": 0.0,
    "recon_draws": 0,
    "shared_trunk": False,
}  # model options added after runs were recorded, at their "off" value
LATER_FIELDS = {
    "image_decoder": "conv",
    "placement_stride": 4,
    "image_network": "conv3",
    "lr_schedule": "constant",
    "precision": "float32",
}  # other settings added since, at what runs did
COMPILE_MODES = ("none", "default", "reduce-overhead")
LR_SCHEDULES = ("constant", "cosine", "anneal")
ANNEAL_SHARE = 0.2  # anneal: the last fifth of the steps falls to 0
PRECISIONS = ("auto", "float32", "bfloat16")
WARMUP_MODELS = ("jmvae", "telbo", "mvtcae")  # the objectives whose KL terms kl_weight scales
MODEL_OPTIONS = tuple(
    dict.fromkeys(o for name in MODELS for o in options(name))
)  # every model's options: TrainConfig fields


SEEDS = 2**32  # a seed is an integer from 0 to SEEDS - 1 (train and generate)


def check_seed(seed: int, flag: str = "seed") -> None:
    if not 0 <= seed < SEEDS:
        raise UserError(f"{flag} {seed} (allowed: an integer from 0 to {SEEDS - 1})")


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (Linux /proc/cpuinfo; elsewhere: no)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class TrainConfig:
    """Everything that decides a run; the CLI flags map onto these one to one."""

    preset: str | None = None  # None: position-digit, unless `data` names a user's data
    data: str | None = (
        None  # a folder in the ImageFolder layout or an .npz (absolute; relative: inside the run)
    )
    attribute: list[str] = field(
        default_factory=list
    )  # NAME=categorical|binary|continuous: kinds not inferred
    image_size: str | None = None  # N or HxW: every image resized to it (None: the data's own size)
    image_likelihood: str | None = None  # bernoulli, laplace or continuous-bernoulli (None: bernoulli)
    image_network: str | None = None  # the image's encoders and decoder: mlp, conv2, conv3, conv3-light,
    # conv4 (networks.conv_recipe); None: the preset's (PRESET_DEFAULTS), else conv3
    image_decoder: str | None = None  # conv: the network's; placed, posed: a glyph laid at learnt offsets
    # (PlacedDecoder); None: the preset's (PRESET_DEFAULTS), else conv
    placement_stride: int | None = None  # placed, posed: offsets every N pixels; None: the preset's, else 4
    model: str = "jmvae"
    z_dim: int | None = None  # None: the preset's (PRESET_DEFAULTS, else 2); config.json records the number
    hidden: int = 512
    # The model's options (see models/__init__.py): None is the model's own default; `resolved()` fills them
    # in.
    alpha: float | None = None  # JMVAE: weight of its KL terms; 0 is JMVAE-zero
    attribute_weight: float | None = None  # lambda on every log p(y_i|z)
    every_subset: bool | None = None  # a term for every non-empty attribute subset, not only all of them
    attribute_recon: float | None = None  # JMVAE: gamma_y, attributes reconstructed from q(z|y_S)
    image_recon: float | None = None  # gamma_x, the image reconstructed from q(z|y)
    image_target: str | None = None  # JMVAE: what that image term scores, "matched" or "paired"
    prior_recon: float | None = (
        None  # JMVAE: gamma_p, both decoders taught the nearest codes at draws of p(z)
    )
    recon_draws: int | None = (
        None  # JMVAE: draws of q(z|y) and of p(z) a step for the gamma terms (0: one per example)
    )
    components: int | None = None  # JMVAE: Gaussians per attribute expert
    shared_trunk: bool | None = None  # JMVAE, TELBO: one conv trunk per image for q(z|x,y) and q(z|x)
    random_subsets: int | None = None  # MVAE: ELBOs of random modality subsets per step
    samples: int | None = None  # MMVAE: importance samples K per expert
    dreg: bool | None = None  # MMVAE: doubly reparameterised gradients
    tc_alpha: float | None = None  # MVTCAE: the KL's share on the conditional (expert) terms
    beta: float | None = None  # MVTCAE, MMVAE+: weight of the KL terms
    private_dim: int | None = None  # MMVAE+: dimensions of each modality's private latent
    sample_subsets: bool | None = (
        None  # MoPoE: each example decoded from one drawn subset (None: if more than 7)
    )
    paper: bool = False  # options at the published objective's values, unless given
    batch_size: int | None = (
        None  # None: the preset's (PRESET_TRAINING), --paper's or TRAINING_DEFAULTS; set on creation
    )
    lr: float | None = None
    lr_schedule: str = "constant"  # constant; cosine: from lr to 0 over the run; anneal: over its last fifth
    seed: int = 0
    epochs: int | None = None  # None and steps None: as many steps as 20 epochs of full MNIST
    steps: int | None = None
    mnist_dir: str | None = None
    mnist: str = "auto"  # auto: full MNIST if found, else the bundled subset; full; bundled
    test_fraction: float = 0.2
    hold_out: list[str] = field(default_factory=list)
    label_fraction: float = 1.0  # the share of training examples whose attributes the model sees (seeded)
    split: str | None = None  # mnist-a: iid (default) or compositional
    binarize: bool = False  # training images drawn from Bernoulli(pixel) at every step; the test set once
    warmup: int = 0  # epochs over which the KL terms' weight rises linearly to 1 (0: none)
    precision: str = (
        "auto"  # the networks' products in training: auto, float32, bfloat16 (config.json: which)
    )
    compile: str = "none"  # torch.compile the training step: none, default, reduce-overhead (CUDA graphs)
    log: list[str] = field(default_factory=list)  # experiment trackers: tensorboard, mlflow
    sampler: list[str] = field(
        default_factory=list
    )  # post-hoc latent samplers fitted after training: gmm, maf
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.preset is None and self.data is None:
            self.preset = "position-digit"
        preset_training = PRESET_TRAINING.get(self.preset) if self.preset is not None else None
        defaults = preset_training or (PAPER_TRAINING if self.paper else TRAINING_DEFAULTS)
        for name, default in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, default)

    def validate(self) -> None:
        def check(ok: bool, what: str, allowed: str) -> None:
            if not ok:
                raise UserError(f"{what} (allowed: {allowed})")

        if self.data is not None:
            check(self.preset is None, f"--preset {self.preset} with --data", "one of them")
            check(
                self.mnist_dir is None and self.split is None and self.mnist in ("auto", "none"),
                "--mnist, --mnist-dir or --split with --data",
                "those flags with --preset only",
            )
        else:
            check(self.preset in PRESETS, f"preset {self.preset}", ", ".join(PRESETS))
            check(
                not self.attribute and self.image_size is None,
                "--attribute or --image-size without --data",
                "those flags with --data",
            )
        check(self.model in MODELS, f"model {self.model}", ", ".join(MODELS))
        check(self.z_dim is None or self.z_dim >= 1, f"z-dim {self.z_dim}", "an integer >= 1")
        check(self.hidden >= 1, f"hidden {self.hidden}", "an integer >= 1")
        # At least three hidden x hidden layers and a 784 x hidden one each way, in float32: a lower bound on
        # the weights alone, so a width no machine holds stops here, not as an allocation failure deep in
        # torch.
        need, have = 4 * (3 * self.hidden**2 + 2 * 784 * self.hidden), memory_bytes()
        check(
            have is None or need <= have,
            f"hidden {self.hidden}",
            f"a width whose weights fit in this machine's {(have or 0) / 1e9:.0f} GB; it needs at least "
            f"{need / 1e9:,.0f} GB",
        )
        for name in ("alpha", "attribute_recon", "image_recon", "prior_recon"):
            value = getattr(self, name)
            check(
                value is None or (value >= 0 and math.isfinite(value)),
                f"{name.replace('_', '-')} {value}",
                "a number >= 0",
            )
        check(
            self.attribute_weight is None
            or (self.attribute_weight > 0 and math.isfinite(self.attribute_weight)),
            f"attribute-weight {self.attribute_weight}",
            "a number > 0",
        )
        check(
            self.recon_draws is None or self.recon_draws >= 0,
            f"recon-draws {self.recon_draws}",
            "an integer >= 0 (0: one per example)",
        )
        check(
            self.components is None or 1 <= self.components <= 16, f"components {self.components}", "1 to 16"
        )
        check(
            self.random_subsets is None or 0 <= self.random_subsets <= 64,
            f"random-subsets {self.random_subsets}",
            "0 to 64",
        )
        check(self.samples is None or 1 <= self.samples <= 1000, f"samples {self.samples}", "1 to 1000")
        check(
            self.tc_alpha is None or 0 <= self.tc_alpha <= 1,
            f"tc-alpha {self.tc_alpha}",
            "a number from 0 to 1",
        )
        check(self.beta is None or 0 <= self.beta <= 1000, f"beta {self.beta}", "a number from 0 to 1000")
        check(
            self.private_dim is None or 1 <= self.private_dim <= 512,
            f"private-dim {self.private_dim}",
            "an integer from 1 to 512",
        )
        check(
            self.image_target in (None, *IMAGE_TARGETS),
            f"image-target {self.image_target}",
            ", ".join(IMAGE_TARGETS),
        )
        if self.model in MODELS:
            takes = options(self.model)
            for name in MODEL_OPTIONS:
                check(
                    getattr(self, name) is None or name in takes,
                    f"--{name.replace('_', '-')} with model {self.model}",
                    f"options of {self.model}: {', '.join('--' + o.replace('_', '-') for o in takes)}",
                )
        check_seed(self.seed)
        check(
            self.batch_size is not None and self.batch_size >= 1,
            f"batch-size {self.batch_size}",
            "an integer >= 1",
        )
        check(
            self.lr is not None and 0 < self.lr <= 1 and math.isfinite(self.lr),
            f"lr {self.lr}",
            "a number in (0, 1]",
        )
        check(self.lr_schedule in LR_SCHEDULES, f"lr-schedule {self.lr_schedule}", ", ".join(LR_SCHEDULES))
        check(self.epochs is None or self.epochs >= 1, f"epochs {self.epochs}", "an integer >= 1")
        check(self.steps is None or self.steps >= 1, f"steps {self.steps}", "an integer >= 1")
        check(
            self.epochs is None or self.steps is None,
            f"both epochs {self.epochs} and steps {self.steps}",
            "one of them",
        )
        check(
            self.image_network in (None, *IMAGE_NETWORKS),
            f"image-network {self.image_network}",
            ", ".join(IMAGE_NETWORKS),
        )
        check(
            self.image_decoder in (None, *IMAGE_DECODERS),
            f"image-decoder {self.image_decoder}",
            ", ".join(IMAGE_DECODERS),
        )
        check(
            self.placement_stride in (None, *PLACEMENT_STRIDES),
            f"placement-stride {self.placement_stride}",
            ", ".join(map(str, PLACEMENT_STRIDES)),
        )
        check(
            self.image_likelihood in (None, *IMAGE_LIKELIHOODS),
            f"image-likelihood {self.image_likelihood}",
            ", ".join(IMAGE_LIKELIHOODS),
        )
        check(
            self.mnist in SOURCES or (self.data is not None and self.mnist == "none"),
            f"mnist {self.mnist}",
            ", ".join(SOURCES),
        )
        check(
            self.mnist != "bundled" or self.mnist_dir is None,
            f"--mnist-dir {self.mnist_dir} with --mnist bundled",
            "one of them",
        )
        check(0 < self.test_fraction < 1, f"test-fraction {self.test_fraction}", "a number in (0, 1)")
        check(0 < self.label_fraction <= 1, f"label-fraction {self.label_fraction}", "a number in (0, 1]")
        check(
            self.split is None or (self.preset in SPLIT_PRESETS and self.split in SPLITS),
            f"--split {self.split} with preset {self.preset}",
            f"--split {' or '.join(SPLITS)} with preset " + ", ".join(SPLIT_PRESETS),
        )
        check(self.warmup >= 0, f"warmup {self.warmup}", "an integer >= 0 (epochs)")
        check(
            self.warmup == 0 or self.model in WARMUP_MODELS,
            f"--warmup with model {self.model}",
            f"models {', '.join(WARMUP_MODELS)}: their KL terms are separate terms",
        )
        trackers.check(self.log)
        for kind in self.sampler:
            check(kind in SAMPLERS, f"--sampler {kind}", ", ".join(SAMPLERS))
        check(self.precision in PRECISIONS, f"precision {self.precision}", ", ".join(PRECISIONS))
        check(
            self.device in ("auto", "cpu") or self.device.startswith("cuda"),
            f"device {self.device}",
            "auto, cpu, cuda, cuda:N",
        )
        if self.device.startswith("cuda"):
            check(torch.cuda.is_available(), f"device {self.device}", "cpu: no CUDA device is available here")
        check(self.compile in COMPILE_MODES, f"compile {self.compile}", ", ".join(COMPILE_MODES))
        check(
            self.compile != "reduce-overhead" or self.resolved_device().type == "cuda",
            f"--compile reduce-overhead on {self.resolved_device()}",
            "CUDA graphs need a CUDA device; default on the CPU",
        )

    def resolved(self) -> TrainConfig:
        """This config with z_dim and every option of its model filled in: given values, else the preset's
        (PRESET_DEFAULTS, a ConvDefault only where it holds), else the paper's (--paper), else the model's
        defaults; options the model does not take stay None."""
        takes = options(self.model)
        preset = {
            name: value.value if isinstance(value, ConvDefault) else value
            for name, value in PRESET_DEFAULTS.get(self.preset or OWN_DATA, {}).items()
            if not isinstance(value, ConvDefault) or value.holds(self)
        }
        z_dim = self.z_dim if self.z_dim is not None else preset.get("z_dim", 2)
        filled = {
            name: (
                getattr(self, name)
                if getattr(self, name) is not None
                else preset[name]
                if name in preset
                else paper(self.model)[name]
                if self.paper and name in paper(self.model)
                else takes[name]
            )
            for name in takes
        }
        return replace(
            self,
            z_dim=z_dim,
            image_decoder=self.image_decoder or preset.get("image_decoder", "conv"),
            image_network=self.image_network or preset.get("image_network", "conv3"),
            placement_stride=self.placement_stride or preset.get("placement_stride", 4),
            precision=self.resolved_precision(),
            **filled,
        )

    def default_epochs(self) -> int | None:
        """The passes a run trains without --epochs or --steps where they are not the dataset's: a glyph
        decoder's (GLYPH_EPOCHS) on its preset and recipe; else None (the dataset's `default_steps`)."""
        resolved = self.resolved()
        if self.epochs is not None or self.steps is not None or resolved.image_decoder not in GLYPH_DECODERS:
            return None
        preset = self.preset or OWN_DATA
        return GLYPH_EPOCHS.get((preset, resolved.image_network), GLYPH_EPOCHS.get((preset, None)))

    def resolved_precision(self) -> str:
        """auto: bfloat16 on a CPU that multiplies it natively (AVX512-BF16 or AMX: twice float32's matmul
        speed; see benchmarks/README.md), else float32 (a GPU step at this size is launch-bound)."""
        if self.precision != "auto":
            return self.precision
        return "bfloat16" if self.resolved_device().type == "cpu" and native_bfloat16() else "float32"

    def precision_dtype(self) -> torch.dtype | None:
        """The dtype of the networks' products in training; None for float32 (no autocast at all)."""
        return {"float32": None, "bfloat16": torch.bfloat16}[self.resolved_precision()]

    def kl_weight(self, epoch: int) -> float:
        """The KL terms' weight in (0-based) `epoch`: (epoch + 1) / warmup during the warm-up, then 1."""
        return 1.0 if epoch + 1 >= self.warmup else (epoch + 1) / self.warmup

    def lr_at(self, step: int, total_steps: int) -> float:
        """Adam's learning rate at (0-based) `step` of a run of `total_steps`: a function of the step alone,
        so a resumed run follows the same schedule."""
        assert self.lr is not None  # set on creation (__post_init__)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
        if self.lr_schedule == "anneal":  # constant while the shapes are learnt, then a cosine to 0
            start = total_steps * (1 - ANNEAL_SHARE)
            return self.lr * 0.5 * (1 + math.cos(math.pi * max(0.0, step - start) / (total_steps - start)))
        return self.lr

    def model_options(self) -> dict:
        return {name: getattr(self, name) for name in options(self.model)}

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def plan(self, n_train: int, default_steps: int) -> tuple[int, int, int]:
        """(steps per epoch, epochs, total steps); every step is a full batch. Without --epochs or --steps a
        run takes the dataset's default length (`AttributeDataset.default_steps`)."""
        assert self.batch_size is not None  # set on creation (__post_init__)
        per_epoch = n_train // self.batch_size
        if per_epoch == 0:
            raise UserError(
                f"batch-size {self.batch_size} (allowed: at most the {n_train} training examples)"
            )
        if self.steps is not None:
            total = self.steps
        elif self.epochs is not None:
            total = self.epochs * per_epoch
        else:
            total = default_steps
        return per_epoch, math.ceil(total / per_epoch), total

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        """The config a run recorded; a UserError if it is not one jmvae could have written."""
        known = {f.name for f in fields(cls)}
        if d.get("model", "jmvae") not in MODELS:
            raise UserError(f"config.json: model {d.get('model')!r} (allowed: {', '.join(MODELS)})")
        if "attribute_weight" not in d:  # a run from before the options: it trained the papers' objectives
            takes = options(d.get("model", "jmvae"))
            d = {
                name: paper(d.get("model", "jmvae")).get(name, default) for name, default in takes.items()
            } | d
        # options added since: a run recorded without one trained without it (the value that turns it off)
        d = (
            {name: off for name, off in LATER_OPTIONS.items() if name in options(d.get("model", "jmvae"))}
            | LATER_FIELDS
            | d
        )
        unknown = [k for k in d if k not in known]
        if unknown:
            raise UserError(
                f'config.json: unknown setting {unknown[0]!r} in "train" (allowed: the settings jmvae '
                "writes; remove it, or train again with --overwrite)"
            )
        cfg = cls(**d)
        try:
            replace(cfg, device="cpu", compile="none").validate()  # the device it trained on need not be here
        except TypeError:
            raise UserError(
                "config.json: a setting of the wrong type (allowed: the config jmvae wrote)"
            ) from None
        except UserError as e:  # a recorded setting, not a flag: name it as config.json spells it
            text = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), str(e))
            raise UserError(f"config.json: {text}") from None
        return cfg


def read_json(path: Path, what: str = "") -> Any:
    """A JSON file of a run, or a UserError naming it (a truncated or edited file is not a traceback)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:80]}; "
            f"allowed: the file jmvae wrote{what})"
        ) from None


def read_config(run_dir: Path) -> dict:
    """config.json of a run, checked to be one jmvae wrote (it has a "train" section)."""
    config = read_json(run_dir / "config.json", ": re-run `jmvae train --overwrite`")
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        raise UserError(f'{run_dir / "config.json"} is not a jmvae run config (no "train" section)')
    return config


def run_config(run_dir: Path, config: dict | None = None) -> TrainConfig:
    """The TrainConfig a run recorded (from its config.json, or from `config` already read). A run of the
    default length keeps the steps it was planned with (`total_steps`), should a later default differ."""
    config = config if config is not None else read_config(run_dir)
    cfg = TrainConfig.from_json(config["train"])
    total = config.get("total_steps")
    if cfg.epochs is None and cfg.steps is None and type(total) is int and total > 0:
        cfg = replace(cfg, steps=total)
    return cfg


def is_run_dir(run_dir: Path) -> bool:
    """Whether `run_dir` holds a config.json that jmvae wrote (what --overwrite and --resume require)."""
    try:
        read_config(run_dir)
        return True
    except UserError:
        return False


def require_run(run_dir: str | Path, finished: bool = False) -> Path:
    """The run directory, or a UserError saying why it cannot be used."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"run directory {run_dir} does not exist or is not a jmvae run (no config.json)")
    read_config(run_dir)
    if not (run_dir / "model.pt").exists():
        raise UserError(
            f"run {run_dir} is not finished: no model.pt (resume it with `jmvae train --resume --out "
            f"{run_dir}`)"
        )
    if finished and not is_finished(run_dir):
        raise UserError(f"run {run_dir} is not finished: no {FINISHED} (run `jmvae evaluate {run_dir}`)")
    return run_dir
