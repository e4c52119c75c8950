"""The training loop: batches from in-memory tensors, a progress bar, history.csv, a checkpoint per epoch.

Every epoch reseeds its shuffling and its reparameterisation noise from (seed, epoch), and the checkpoint
holds the optimizer state, so a run resumed after epoch k ends with the same weights as one never stopped.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .config import TrainConfig, is_run_dir, read_config, require_run, run_config
from .data.attributes import AttributeDataset, batches, hide_labels, load_dataset, seeded_subset, to_batch
from .data.own import attribute_flag, save_dataset
from .errors import UserError
from .explore import EXPLORER
from .models import MultimodalVAE, build_model
from .networks import GLYPH_DECODERS, conv_recipe, low_precision, placed_fits
from .runs import (
    FINISHED,
    LOCK,
    RunLock,
    check_data,
    check_links,
    check_parents,
    check_path,
    fingerprint,
    is_finished,
    load_torch,
    remove_temp_files,
    safe_remove,
    save_torch,
    write_json,
    write_text,
)
from .samplers import SAMPLERS, sampler_path
from .subsets import mark_observed, missing
from .trackers import Trackers, reachable


def build(
    cfg: TrainConfig,
    quiet: bool = False,
    run_dir: Path | None = None,
    dataset: AttributeDataset | None = None,
) -> tuple[AttributeDataset, MultimodalVAE]:
    """The dataset (`dataset` if given, else built from the config; a relative `data` path is inside
    `run_dir`) and a freshly initialised model (seeded) for a config."""
    cfg.validate()
    cfg = cfg.resolved()
    assert cfg.image_decoder is not None and cfg.image_network is not None  # resolved() filled them in
    assert cfg.placement_stride is not None
    if dataset is not None:
        data = dataset
    else:
        path = cfg.data
        if path is not None and run_dir is not None and not Path(path).is_absolute():
            path = str(run_dir / path)
        with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
            data = load_dataset(
                cfg.preset,
                cfg.mnist_dir,
                cfg.seed,
                cfg.test_fraction,
                cfg.hold_out,
                cfg.mnist,
                cfg.binarize,
                cfg.split,
                path,
                cfg.attribute,
                cfg.image_size,
                progress=not quiet,
            )
    data.images = [
        replace(
            im,
            likelihood=cfg.image_likelihood or im.likelihood,
            network=cfg.image_network,
            decoder=cfg.image_decoder,
            stride=cfg.placement_stride,
        )
        for im in data.images
    ]
    if unfit := [im for im in data.images if im.decoder in GLYPH_DECODERS and not placed_fits(im)]:
        h, w = unfit[0].shape
        resize = "; --image-size resizes them" if cfg.data else ""
        raise UserError(
            f"--image-decoder {unfit[0].decoder} with image {unfit[0].name} of {h}x{w} (allowed: images from "
            f"32x32 whose sides divide by 8{resize})"
        )
    mlp = [im for im in data.images if conv_recipe(im) is None]
    if cfg.model_options().get("shared_trunk") and mlp:
        h, w = mlp[0].shape
        raise UserError(
            f"--shared-trunk with image {mlp[0].name} of {h}x{w}, whose networks are the MLP (allowed: conv "
            "networks: images from 32x32 with sides divisible by 8, or from 16x16 divisible by 4 with "
            "--image-network conv2)"
        )
    torch.manual_seed(cfg.seed)
    assert cfg.z_dim is not None  # resolved() filled it in
    try:
        model = build_model(cfg.model, data.modalities, cfg.z_dim, cfg.hidden, **cfg.model_options())
    except (
        RuntimeError,
        MemoryError,
    ) as e:  # an allocation the machine refuses: name the setting that asked for it
        raise UserError(
            f"--hidden {cfg.hidden}: the model cannot be allocated ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:80] if str(e) else 'out of memory'}) (allowed: a smaller --hidden)"
        ) from None
    return data, model


def training_split(data: AttributeDataset, cfg: TrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """The training split on the training device, its attributes hidden for 1 - label_fraction of the
    examples (seeded by the run's seed), with the OBSERVED mask when any value is missing."""
    split = data.train
    if cfg.label_fraction < 1:
        split = hide_labels(split, [a.name for a in data.attributes], cfg.label_fraction, cfg.seed)
    return {k: v.to(device) for k, v in observed_split(split, data).items()}


def observed_split(split: dict[str, torch.Tensor], data: AttributeDataset) -> dict[str, torch.Tensor]:
    """The split with the OBSERVED mask (and unobserved cells filled) where any cell is not observed."""
    return mark_observed(split, data.modalities) if missing(split, data.modalities) else split


DATA_FILE = "data.npz"  # a dataset given from Python, kept in its run


def schema(data: AttributeDataset) -> dict:
    """What config.json and the report say about the data: each image, each attribute's kind and values."""
    return {
        "images": {
            im.name: {
                "height": im.shape[0],
                "width": im.shape[1],
                "channels": im.channels,
                "likelihood": im.likelihood,
                # its encoders' and decoder's recipe (after any fallback)
                "network": conv_recipe(im) or "mlp",
                "decoder": im.decoder,  # placed, posed: PlacedDecoder instead of the recipe's
            }
            for im in data.images
        },
        "attributes": {a.name: a.describe() for a in data.attributes},
    }


def data_card(data: AttributeDataset) -> dict:
    """Per attribute: how often each value (a continuous one: each level, nearest) occurs in the training
    split, and the share of cells not observed in each split; for the report's data card."""
    card = {}
    for a in data.attributes:
        levels = a.to_levels(data.train[a.name])
        counts = torch.bincount(levels[levels >= 0], minlength=len(a.classes)).tolist()
        card[a.name] = {
            "kind": a.kind,
            "counts": dict(zip(a.classes, counts)),
            "missing_train": float((~a.observed(data.train[a.name])).float().mean()),
            "missing_test": float((~a.observed(data.test[a.name])).float().mean()),
        }
    return card


def schema_text(data: AttributeDataset) -> str:
    lines = [
        f"  {im.name}: image {im.shape[0]}x{im.shape[1]}, {'grey' if im.channels == 1 else 'colour'}, "
        f"{conv_recipe(im) or 'mlp'} networks"
        + (
            f", {im.decoder} decoder (offsets every {im.stride} pixels)"
            if im.decoder in GLYPH_DECODERS
            else ""
        )
        for im in data.images
    ]
    for a in data.attributes:
        d = a.describe()
        what = (
            f"continuous, mean {d['mean']:.4g}, std {d['std']:.4g}"
            if d["kind"] == "continuous"
            else f"{d['kind']}: {', '.join(d['values'][:12])}{' ...' if len(d['values']) > 12 else ''}"
        )
        lines.append(f"  {a.name}: {what}")
    return "schema:\n" + "\n".join(lines)


def make_optimizer(model: MultimodalVAE, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where this torch has one for the device: one pass over every parameter
    instead of a dozen small ops per tensor (a third of a CPU step before; see benchmarks/README.md)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Each optimizer state tensor in its parameter's memory layout: the fused kernel reads both as flat
    memory, so a state saved in another layout (a run from before conv weights were channels-last) would
    mix up elements."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


# The per-epoch test loss (history.csv, the training curves) is taken on this many test images, the same
# seeded ones every epoch and for every model of a dataset, in chunks of the batch size (so terms that mix the
# examples of a batch mean what they mean in training). On all 4,334 test images of full MNIST it cost a
# default run more than its evaluation; 1,024 give a curve whose epoch-to-epoch changes are the same.
TEST_LOSS_EXAMPLES = 1024


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


@torch.no_grad()
def evaluate_loss(
    model: MultimodalVAE, split: dict[str, torch.Tensor], seed: int, chunk: int = 2048
) -> dict[str, float]:
    """Mean loss and terms over a whole split, with fixed noise so epochs compare fairly; the KL terms at full
    weight during a warm-up too, so the curve shows the objective the run ends with.

    The chunks are seeded shuffles of the split, as training batches are: terms that mix a batch's examples
    (JMVAE's prior and matched image terms) saw one position only in each chunk of a test set stored in
    order, so a default run's test loss rose from 350 to 411 (on shuffled chunks it ends at 278, train
    271)."""
    was_training, kl_weight = model.training, model.kl_weight
    model.eval()
    model.kl_weight = 1.0
    n, device = len(next(iter(split.values()))), next(model.parameters()).device
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    total: dict[str, float] = {}
    for batch in batches({k: v[order] for k, v in split.items()}, chunk, device):
        loss, terms = model.loss(batch)
        weight = len(next(iter(batch.values()))) / n
        for k, v in {"loss": loss, **terms}.items():
            total[k] = total.get(k, 0.0) + float(v) * weight
    model.train(was_training)
    model.kl_weight = kl_weight
    return total


def train_steps(
    model: MultimodalVAE,
    optimizer: torch.optim.Optimizer,
    split: dict[str, torch.Tensor],
    order: torch.Tensor,
    batch_size: int,
    steps: int,
    on_step=lambda n: None,
    losses: torch.Tensor | None = None,
    loss=None,
    binarize: Sequence[str] = (),
    lr_at=None,
    precision: torch.dtype | None = None,
) -> tuple[torch.Tensor | None, list[str]]:
    """The hot loop: `steps` optimizer steps on the batches order[i*B:(i+1)*B] of an in-memory split.

    Returns the sum over steps of [loss, *terms] as one tensor (None for no steps) and their names; `losses`,
    if given, receives each step's loss (for finding the first non-finite one); `loss` replaces model.loss
    (the DistributedDataParallel wrapper, whose forward is the loss); `binarize` names the images drawn afresh
    from Bernoulli(pixel) at each step; `lr_at(i)`, if given, sets the learning rate of step i; `precision` is
    the dtype of the networks' products (None: float32). Nothing in the loop waits for the device (no .item(),
    no host copies).
    """
    sums, names = None, ["loss"]
    objective = loss or model.loss
    for i in range(steps):
        batch = to_batch(split, order[i * batch_size : (i + 1) * batch_size])
        for x in binarize:
            batch[x] = torch.bernoulli(batch[x])
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(i)
        with low_precision(precision):
            loss, terms = objective(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_terms = torch.stack([loss.detach(), *terms.values()])
        sums = step_terms if sums is None else sums + step_terms
        if losses is not None:
            losses[i] = step_terms[0]
        on_step(1)
    return sums, names + list(terms)


def write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


RUN_FILES = (
    FINISHED,
    "report.html",
    "model.pt",
    "checkpoint.pt",
    "history.csv",
    "data.npz",
)  # config.json goes last


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run, or anything that is not one, by accident; touches nothing."""
    check_path(run_dir)
    check_parents(run_dir, f"run directory {run_dir}")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file (allowed: a directory, new or a jmvae run)")
    check_links(run_dir)
    started = run_dir.is_dir() and any(
        not p.name.endswith(".tmp") and p.name != LOCK for p in run_dir.iterdir()
    )
    is_run = is_run_dir(run_dir)
    if resume:
        if not started:
            raise UserError(
                f"--resume: run directory {run_dir} does not exist (allowed: a run that was started)"
            )
        if not is_run:
            raise UserError(f"--resume: {run_dir} is not a jmvae run (no readable config.json of jmvae's)")
        return
    if not started:
        return
    if not overwrite and not is_run:
        raise UserError(
            f"{run_dir} already holds files and is not a jmvae run (no readable config.json of jmvae's), so "
            "no run is started there (allowed: a new directory, or a jmvae run with --resume or --overwrite)"
        )
    if not overwrite:
        state = (
            "a finished run" if is_finished(run_dir) else "an unfinished run (use --resume to continue it)"
        )
        raise UserError(f"{run_dir} already holds {state}; pass --overwrite or choose another --name")
    if not is_run:
        raise UserError(
            f"--overwrite: {run_dir} is not a jmvae run (no readable config.json of jmvae's), so nothing in "
            "it is deleted (allowed: a jmvae run directory, or a new --out)"
        )


def clear_run(run_dir: Path) -> None:
    """Delete a run's files, the finished mark first, so a kill midway never leaves a run that looks finished;
    the old TensorBoard event files too (two runs would read as one). Never through a link (safe_remove)."""
    for name in RUN_FILES:
        safe_remove(run_dir, run_dir / name)
    for kind in SAMPLERS:  # fitted to the old model's codes
        safe_remove(run_dir, sampler_path(run_dir, kind))
    figures_dir = run_dir / "figures"
    if figures_dir.is_dir() and not figures_dir.is_symlink():
        for f in [*figures_dir.glob("*.png"), figures_dir / "figures.json"]:
            safe_remove(run_dir, f)
    events = run_dir / "tensorboard"
    if events.is_dir() and not events.is_symlink():
        for f in sorted(events.rglob("*"), reverse=True):
            if f.is_dir() and not f.is_symlink():
                try:
                    f.rmdir()
                except OSError:
                    pass
            else:
                safe_remove(run_dir, f)
    remove_temp_files(run_dir)
    safe_remove(run_dir, run_dir / "config.json")


def longer(cfg: TrainConfig, recorded: dict, epochs: int) -> TrainConfig:
    """The run's config trained to `epochs` (`--resume --epochs N`); refused unless the added epochs train as
    a fresh run of N epochs would (a constant rate, whole epochs), so the longer run is that run."""
    if cfg.epochs == epochs:  # the length the run was started with
        return cfg
    values = [recorded.get(k) for k in ("epochs", "steps_per_epoch", "total_steps")]
    if not all(type(v) is int and v > 0 for v in values):
        raise UserError(
            "config.json: epochs {!r}, steps_per_epoch {!r}, total_steps {!r} (allowed: the whole numbers "
            "jmvae wrote; start the run again with --overwrite)".format(*values)
        )
    had, per, total = (int(v or 0) for v in values)
    if total != had * per:
        raise UserError(
            f"--epochs {epochs} with --resume of a run of {total} steps, {total / per:g} epochs of {per} "
            "steps (allowed: runs of a whole number of epochs)"
        )
    if epochs < had:
        raise UserError(
            f"--epochs {epochs} with --resume (the run has {had}; allowed: more, to train it longer)"
        )
    if epochs > had and cfg.lr_schedule != "constant":
        raise UserError(
            f"--epochs {epochs} with --resume of a run with --lr-schedule {cfg.lr_schedule}, whose rate "
            "depends on the run's length (allowed: runs with --lr-schedule constant)"
        )
    return replace(cfg, epochs=epochs, steps=None) if epochs > had else cfg


def unfinish(run_dir: Path) -> None:
    """Remove what a run's last model made, the finished mark first, so that a run trained again (longer, or
    from the start) is never taken for finished: the report, model.pt, fitted samplers, explorer, figures."""
    for name in (FINISHED, "report.html", "model.pt", EXPLORER):
        safe_remove(run_dir, run_dir / name)
    for kind in SAMPLERS:
        safe_remove(run_dir, sampler_path(run_dir, kind))
    figures_dir = run_dir / "figures"
    if figures_dir.is_dir() and not figures_dir.is_symlink():
        for f in [*figures_dir.glob("*.png"), figures_dir / "figures.json"]:
            safe_remove(run_dir, f)


def differing_flags(given: dict, recorded: TrainConfig) -> list[str]:
    """The flags of `given` whose values differ from the run's recorded config (for --resume); `--precision
    auto` is compared as what it chooses on this machine (config.json records the choice)."""

    def value(k: str, v):
        return replace(recorded, precision=v).resolved_precision() if k == "precision" else v

    return [
        f"--{k.replace('_', '-')} {v} (the run has {getattr(recorded, k)})"
        for k, v in given.items()
        if getattr(recorded, k) != value(k, v)
    ]


TRAINING_PHASES = (
    "data and model",
    "training steps",
    "test loss and checkpoints",
    "saving",
)  # what train() times


def flush_subnormals() -> None:
    """Compute subnormal floats as zero, in this whole process (the only scope PyTorch offers; CPU only).

    Tiny weights and gradients become subnormal after a few hundred steps; on an Intel Xeon every product
    touching them ran slow (epochs of the default run: 10 s, then 22 s from the fourth on). Flushed to zero
    they stay 10 s, with the same losses. Whatever steps `train_steps` (the trainer, the benchmarks) calls
    this.
    """
    torch.set_flush_denormal(True)


def reuse_freed_memory() -> bool:
    """Let glibc's malloc keep the memory that large tensors free and hand it to the next ones, in this whole
    process; False where the C library is not glibc (nothing changes there).

    glibc serves an allocation above its mmap threshold (at most 32 MB, adjusted as it goes) with fresh pages
    and returns them to the system on free, and every fresh page costs a fault on first touch. MNIST-A's
    evaluation decodes and classifies about 700,000 64x64 images: a default run took 310 million page faults
    (686 s of system time in 26.8 minutes); with both thresholds raised, decoding a thousand latents twice
    faults on the first pass only (benchmarks/README.md). The cost: up to the trim threshold of freed memory
    stays with the process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 512 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    log=print,
    trackers: Trackers | None = None,
    seconds: dict[str, float] | None = None,
    evaluation: dict | None = None,
    dataset: AttributeDataset | None = None,
    lock: RunLock | None = None,
    epochs: int | None = None,
) -> tuple[AttributeDataset, MultimodalVAE]:
    """Train `cfg` into `run_dir` (config.json, checkpoint.pt, history.csv, model.pt); return data and model.

    The run's RunLock is taken once every check has passed, before anything is deleted or written; a second
    writer stops with one line naming this process. `lock`, if given, is taken and left held (the CLI holds it
    through figures and evaluation); else the lock is released on return.

    `seconds`, if given, receives the wall time of its phases: "data and model" (checks, dataset, model),
    "training steps", "test loss and checkpoints" (the per-epoch bookkeeping) and "saving".
    `evaluation`, if given, is recorded in config.json: the evaluation settings a resumed run is finished
    with. `dataset`, if given (e.g. `jmvae.data.from_arrays(...)`), is trained on and saved in the run as
    data.npz, so that every later command rebuilds it.

    Every check (flags, data, hold-out, batch size, the checkpoint to resume) runs before a file is deleted or
    written. With resume=True the run's own config is used and `cfg` is ignored; `epochs`, if more than the
    run has, trains it longer from its last checkpoint (its model, metrics and report are made again). Started
    by torchrun, every rank trains its share of each batch and only rank 0 writes (see distributed.py).
    """
    own = lock is None
    lock = RunLock(run_dir) if lock is None else lock
    if epochs is not None and not resume:
        cfg = replace(cfg, epochs=epochs, steps=None)
    try:
        return _train(
            cfg,
            Path(run_dir),
            resume,
            overwrite,
            progress,
            log,
            trackers,
            seconds,
            evaluation,
            lock,
            dataset,
            epochs,
        )
    finally:
        if own:
            lock.release()


def _train(
    cfg, run_dir, resume, overwrite, progress, log, trackers, seconds, evaluation, lock, dataset, to_epochs
):
    run_dir = Path(run_dir)
    seconds = {} if seconds is None else seconds
    clock = time.perf_counter()
    flush_subnormals()
    ranks = distributed.setup(cfg.resolved_device())  # first, so that every rank can hear of a failed check
    if not ranks.main:
        log, progress = (lambda *a, **k: None), False
    try:
        if dataset is not None and not resume:
            cfg = replace(cfg, preset=None, data=DATA_FILE, mnist="none")
        cfg, data, model, recorded = _prepare(
            cfg, run_dir, resume, overwrite, ranks, dataset if not resume else None, to_epochs
        )
        if ranks.main:
            lock.acquire()  # after every check, before the first file changes
        error = None
    except UserError as e:
        error = str(e)
    distributed.agree(ranks, error)
    device = ranks.device(cfg.resolved_device())
    model.to(device)
    optimizer = make_optimizer(model, cfg.lr)
    train_split = training_split(data, cfg, device)
    n_train = data.n_train
    per_epoch, epochs, total_steps = cfg.plan(
        n_train, data.default_steps(cfg.batch_size, cfg.default_epochs())
    )

    history: list[dict] = []
    start_epoch = 0
    ckpt = None
    if resume and (run_dir / "checkpoint.pt").exists():
        ckpt = load_torch(run_dir / "checkpoint.pt", device)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            match_layouts(optimizer)
            start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
        except Exception as e:
            raise UserError(
                f"{run_dir / 'checkpoint.pt'} does not fit this run ({type(e).__name__}; allowed: the "
                "checkpoint this run wrote; start again with --overwrite)"
            ) from None
    ranks.barrier()  # every rank has read the checkpoint before rank 0 writes
    if ranks.main:
        if overwrite:
            clear_run(run_dir)
        remove_temp_files(run_dir)
    # --resume --epochs N with N more than the run has (a plain --resume never changes the length)
    extend = recorded is not None and to_epochs is not None and epochs != recorded.get("epochs")
    if ranks.main and recorded is not None and (extend or ckpt is None):
        unfinish(run_dir)
    if ckpt is not None and extend:
        if ranks.main:  # the new length; the rest of config.json as it was
            write_json(
                run_dir / "config.json",
                {
                    **recorded,
                    "train": dict(recorded["train"], epochs=epochs, steps=None),
                    "epochs": epochs,
                    "total_steps": total_steps,
                },
            )
        log(f"training {run_dir} longer: from epoch {start_epoch} to {epochs}")
    elif ckpt is not None:
        log(f"resuming {run_dir} after epoch {start_epoch} of {epochs}")
    else:
        if resume:
            log(f"{run_dir} has no checkpoint (stopped before its first): training it from the start")
        if ranks.main:
            if dataset is not None:
                save_dataset(data, run_dir / DATA_FILE)
            write_json(
                run_dir / "config.json",
                {
                    "train": asdict(cfg),
                    "mnist_source": data.source,
                    "objective": model.describe(),
                    "schema": schema(data),
                    "data_card": data_card(data),
                    "data_fingerprint": fingerprint(data),
                    **({"data_options": data.options} if data.options else {}),
                    "n_train": n_train,
                    "n_test": data.n_test,
                    "test_loss_examples": min(TEST_LOSS_EXAMPLES, data.n_test),
                    "device": str(device),
                    "ranks": ranks.world,
                    "steps_per_epoch": per_epoch,
                    "epochs": epochs,
                    "total_steps": total_steps,
                    **({"evaluation": evaluation} if evaluation is not None else {}),
                },
            )
    if ranks.main and trackers is not None:
        trackers.open(run_dir, read_config(run_dir))
    seconds["data and model"] = time.perf_counter() - clock
    seconds["training steps"] = seconds["test loss and checkpoints"] = 0.0
    if ckpt is None:
        on = (
            f"{device}"
            if not ranks.active
            else f"{ranks.world} ranks ({device.type}), {cfg.batch_size // ranks.world} rows each"
        )
        on += f", products in {cfg.precision}" if cfg.precision != "float32" else ""
        length = "" if cfg.steps or cfg.epochs else f" (the default length for {n_train:,} training examples)"
        log(
            f"{model.describe()}\ndata: {data.name}, {n_train} train / {data.n_test} test images "
            f"from {data.source}\n{schema_text(data)}\n"
            f"training {total_steps} steps ({epochs} epochs of {per_epoch}){length} on {on} -> {run_dir}"
        )

    examples = (
        recorded.get("test_loss_examples") if ckpt is not None else TEST_LOSS_EXAMPLES
    )  # older runs: all
    monitored = observed_split(
        {k: v[seeded_subset(data.n_test, examples, cfg.seed)] for k, v in data.test.items()}, data
    )
    step_loss = model.loss
    if cfg.compile != "none":
        # Only the training step: the test loss and the evaluation take other batch sizes, which would
        # recompile.
        step_loss = torch.compile(model.loss, mode=None if cfg.compile == "default" else cfg.compile)
    if ranks.active:
        step_loss = distributed.wrap(model, device, unused_parameters(model, train_split))
    share = ranks.share(cfg.batch_size)
    show_bar = sys.stderr.isatty() if progress is None else progress
    # One history row, test loss and checkpoint per block of `every` epochs: about 20 over a run. Bundled runs
    # have 330 epochs of 12 steps, where bookkeeping after each epoch cost a fifth of the training time.
    every = max(1, epochs // 20)
    block_sums, block_steps, block_start, saved = None, 0, time.perf_counter(), start_epoch
    model.train()
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        steps = min(per_epoch, total_steps - epoch * per_epoch)
        torch.manual_seed(epoch_seed(cfg.seed, epoch))
        model.kl_weight = cfg.kl_weight(epoch)
        order = torch.randperm(n_train, device=device)
        if ranks.active:  # this rank's rows of each global batch, its own noise
            order = order[: steps * cfg.batch_size].view(steps, cfg.batch_size)[:, share].reshape(-1)
            if ranks.rank:
                torch.manual_seed(epoch_seed(cfg.seed, epoch) + 104_729 * ranks.rank)
        losses = torch.full((steps,), math.nan, device=device)  # a step that never ran reads as non-finite
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not show_bar)
        last = f"epoch {saved}" if saved > 0 else "none (stopped before the first)"
        try:
            sums, names = train_steps(
                model,
                optimizer,
                train_split,
                order,
                share.stop - share.start,
                steps,
                bar.update,
                losses,
                step_loss,
                data.image_names if cfg.binarize else (),
                None
                if cfg.lr_schedule == "constant"
                else lambda i, epoch=epoch: cfg.lr_at(epoch * per_epoch + i, total_steps),
                cfg.precision_dtype(),
            )
            sums = distributed.mean_over_ranks(ranks, sums)
        except ValueError:  # torch.distributions refusing a nan location: the weights went non-finite first
            if all(torch.isfinite(p).all() for p in model.parameters()):
                raise
            sums = torch.tensor([math.nan])
        except RuntimeError as e:
            if not ranks.active:
                raise
            raise UserError(
                f"a rank stopped in epoch {epoch + 1} ({str(e).splitlines()[0][:100]}); last good "
                f"checkpoint: {last} (resume with --resume, on any number of ranks)"
            ) from None
        bar.close()
        t_steps = time.perf_counter()
        seconds["training steps"] += t_steps - t0
        if not torch.isfinite(sums).all():
            bad = (
                int((~torch.isfinite(losses)).nonzero()[0]) if not torch.isfinite(losses).all() else steps - 1
            )
            raise UserError(
                f"loss is {float(losses[bad])} at step {epoch * per_epoch + bad + 1} (epoch {epoch + 1}); "
                f"last good checkpoint: {last} (try a lower --lr, with --overwrite)"
            )
        block_sums = sums if block_sums is None else block_sums + sums
        block_steps += steps
        if (epoch + 1) % every and epoch + 1 < epochs:
            continue
        if ranks.main:
            train_means = dict(zip(names, (block_sums / block_steps).tolist()))
            test_means = evaluate_loss(model, monitored, seed=cfg.seed, chunk=cfg.batch_size)
            row = {
                "epoch": epoch + 1,
                "step": epoch * per_epoch + steps,
                "seconds": round(time.perf_counter() - block_start, 3),
            }
            row |= {f"train_{k}": round(v, 5) for k, v in train_means.items()}
            row |= {f"test_{k}": round(v, 5) for k, v in test_means.items()}
            history.append(row)
            write_history(run_dir / "history.csv", history)
            if trackers is not None:
                trackers.epoch(row)
            save_torch(
                run_dir / "checkpoint.pt",
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                },
            )
            log(
                f"epoch {epoch + 1}/{epochs}  step {row['step']}  train loss {train_means['loss']:.2f}  "
                f"test loss {test_means['loss']:.2f}  ({row['seconds']:.2f}s)"
            )
        ranks.barrier()
        saved, block_sums, block_steps, block_start = epoch + 1, None, 0, time.perf_counter()
        seconds["test loss and checkpoints"] += block_start - t_steps
    clock = time.perf_counter()
    if ranks.main:
        save_torch(run_dir / "model.pt", model.state_dict())
    ranks.barrier()
    seconds["saving"] = time.perf_counter() - clock
    model.eval()
    model.kl_weight = 1.0
    return data, model


def unused_parameters(model: MultimodalVAE, split: dict[str, torch.Tensor]) -> bool:
    """Whether some parameter gets no gradient from the loss (JMVAE with alpha 0 never uses its unimodal
    encoders), which DistributedDataParallel must be told; found on two rows."""
    loss, _ = model.loss(to_batch(split, slice(0, 2)))
    return any(g is None for g in torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))


def _prepare(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    ranks: distributed.Ranks,
    dataset: AttributeDataset | None = None,
    epochs: int | None = None,
):
    """The checks and builds that touch no file: (resolved config, data, model, the recorded config or
    None)."""
    if ranks.main:  # another command writing the run: say so before anything else
        RunLock(run_dir).check()  # (rank 0 alone: it takes the lock, and the others must not see it)
    check_run_dir(run_dir, resume, overwrite)
    recorded = None
    if resume:
        recorded = read_config(run_dir)
        cfg = run_config(run_dir, recorded)
        if epochs is not None:
            cfg = longer(cfg, recorded, epochs)
    cfg.validate()
    assert cfg.batch_size is not None  # set on creation (__post_init__)
    distributed.check_batch(ranks, cfg.batch_size)
    if cfg.compile != "none" and ranks.active:
        raise UserError(
            f"--compile {cfg.compile} with {ranks.world} ranks (allowed: --compile none under torchrun)"
        )
    cfg = cfg.resolved()  # config.json records the options the model actually trained with
    if cfg.mnist_dir is not None:
        cfg = replace(cfg, mnist_dir=str(Path(cfg.mnist_dir).expanduser().resolve()))
    if cfg.data is not None and dataset is None and Path(cfg.data).is_absolute() is False and not resume:
        cfg = replace(cfg, data=str(Path(cfg.data).expanduser().resolve()))
    reachable(cfg.log)  # an unreachable tracker stops the run before a file is touched
    data, model = build(cfg, quiet=not ranks.main, run_dir=run_dir, dataset=dataset)
    if recorded is not None:  # resume
        check_data(run_dir, recorded, data)
    check_space(run_dir, model)
    cfg = replace(cfg, mnist=data.mnist)  # pinned: resume, evaluate and figures rebuild this MNIST, or stop
    if cfg.data is not None and dataset is None:  # pinned: every attribute's kind as this run read it
        cfg = replace(cfg, attribute=[attribute_flag(a) for a in data.attributes])
    return cfg, data, model, recorded


def check_space(run_dir: Path, model: MultimodalVAE) -> None:
    """UserError if the run's disk cannot hold what training writes: model.pt, and checkpoint.pt (weights and
    Adam's two moments) with its temporary copy beside it, plus 16 MB of figures and pages."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    need = 6 * weights + (16 << 20)
    folder = next((p for p in (run_dir, *run_dir.parents) if p.is_dir()), Path("."))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need:
        raise UserError(
            f"run directory {run_dir}: training writes about {need / 1e6:,.0f} MB and {folder} has "
            f"{free / 1e6:,.0f} MB free (allowed: a disk with room for the run)"
        )


def load_run(run_dir: str | Path, device: str = "cpu"):
    """(config, dataset, model) of a trained run, the model in eval mode on `device`."""
    run_dir = require_run(run_dir)
    config = read_config(run_dir)
    cfg = run_config(run_dir, config)
    data, model = build(cfg, quiet=True, run_dir=run_dir)
    check_data(run_dir, config, data)
    state = load_torch(run_dir / "model.pt", device)
    try:
        model.load_state_dict(state)
    except Exception as e:
        raise UserError(
            f"{run_dir / 'model.pt'} does not fit the model of config.json ({type(e).__name__}; "
            "allowed: the model.pt this run wrote)"
        ) from None
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise UserError(
            f"{run_dir / 'model.pt'} holds non-finite weights (allowed: a model trained without nan; "
            "train again with a lower --lr)"
        )
    return cfg, data, model.to(device).eval()
