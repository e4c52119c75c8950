"""Training speed of jmvae against the pixyz reference and against the matmul ceiling of the same step.

For each model and batch size: jmvae's own model and optimizer (stepped exactly as jmvae.train.train steps
them) and the pixyz reference (benchmarks/common.py, stepped with pixyz's `model.train(batch)`) start from
the same weights and see the same batches and the same reparameterisation noise. They run --rounds rounds
of --steps timed steps each, interleaved every --slot steps with two replays of bare torch.mm products: the
matmul ceiling (every product of the founding architecture's step) and jmvae's own products; shares are
taken per round and their medians reported. Then both are scored on the full test set with one loss
definition (jmvae's objective, each trained set of weights loaded into a jmvae model, fixed noise), for the
timed pair and for --loss-seeds - 1 more pairs trained the same number of steps from other seeds.

    JMVAE_OFFLINE=1 python benchmarks/train_speed.py --steps 100 --rounds 5                    # the headline
    JMVAE_OFFLINE=1 python benchmarks/train_speed.py --steps 30 --rounds 5 --batch 512 --models jmvae
    JMVAE_OFFLINE=1 python benchmarks/train_speed.py --steps 20 --rounds 1 --loss-seeds 1      # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
from common import (  # noqa: E402
    MatmulReplay,
    ParameterTraffic,
    bad_input,
    copy_weights,
    cpu_model,
    flops_per_sample,
    pixyz_batch,
    pixyz_reference,
    step_layers,
)

from jmvae.config import PRECISIONS, TrainConfig  # noqa: E402
from jmvae.train import build, evaluate_loss, flush_subnormals, make_optimizer, train_steps  # noqa: E402

WARMUP = 5


def machine() -> str:
    cpu = cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {os.cpu_count()} cores ({usable} usable), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, python {platform.python_version()}"
    )


def batch_indices(n: int, batch: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Row indices of `steps` batches, as the trainer draws them: a randperm per epoch, full batches only."""
    if n // batch == 0:
        bad_input(f"--batch {batch} (allowed: at most the {n} training examples)")
    g = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        order = torch.randperm(n, generator=g)
        out += [order[i * batch : (i + 1) * batch] for i in range(n // batch)]
    return out[:steps]


def jmvae_steps(model, optimizer, split, batch, precision: torch.dtype | None = None):
    def run(indices) -> float:
        t0 = time.perf_counter()
        sums, _ = train_steps(
            model,
            optimizer,
            split,
            torch.cat(indices),
            batch,
            len(indices),  # jmvae's hot loop
            precision=precision,
        )
        (sums / len(indices)).tolist()  # the trainer reads its means back once per epoch
        return time.perf_counter() - t0

    return run


def pixyz_steps(model, split):
    def run(indices) -> float:
        t0, total = time.perf_counter(), 0.0
        for idx in indices:  # as pixyz's example: loss = model.train(batch); sum it
            total = total + model.train(pixyz_batch(split, idx)).detach()
        float(total)
        return time.perf_counter() - t0

    return run


class Pair:
    """jmvae (its own model, optimizer and hot loop) and the pixyz reference, from the same initial weights,
    fed the same batches and the same reparameterisation noise (each draws from its own copy of one
    stream)."""

    def __init__(self, kind: str, batch: int, seed: int, steps: int, precision: str):
        # the published objective, which the pixyz reference writes (jmvae's own defaults add terms: see
        # objectives())
        cfg = TrainConfig(model=kind, batch_size=batch, seed=seed, paper=True, precision=precision)
        self.data, self.jm = build(cfg, quiet=True)
        optimizer = make_optimizer(self.jm, lr=1e-3)  # the trainer's own optimizer
        self.px, self.dists = pixyz_reference(kind, lr=1e-3)
        copy_weights(self.jm, self.dists, to="pixyz")
        self.jm.train()
        split, self.seed = self.data.train, seed
        self.batches = batch_indices(len(split["x"]), batch, steps, seed)
        self.runs = {
            "jmvae": jmvae_steps(self.jm, optimizer, split, batch, cfg.precision_dtype()),
            "pixyz": pixyz_steps(self.px, split),
        }
        torch.manual_seed(seed)
        self.rng = {name: torch.get_rng_state() for name in self.runs}

    def run(self, name: str, chunk) -> float:
        torch.set_rng_state(self.rng[name])
        seconds = self.runs[name](chunk)
        self.rng[name] = torch.get_rng_state()
        return seconds

    def test_losses(self) -> dict[str, float]:
        """jmvae's objective on the whole test set, each trained set of weights in a jmvae model, same
        noise."""
        mapped = copy.deepcopy(self.jm)
        copy_weights(mapped, self.dists, to="jmvae")
        torch.manual_seed(self.seed)
        own = float(
            self.px.test(pixyz_batch(self.data.test, slice(None)))
        )  # pixyz's own loss, same objective
        test = self.data.test
        return {
            "jmvae": evaluate_loss(self.jm, test, seed=self.seed)["loss"],
            "pixyz": evaluate_loss(mapped, test, seed=self.seed)["loss"],
            "pixyz_own": own,
        }


def measure(kind: str, batch: int, args) -> dict:
    steps = WARMUP + args.rounds * args.steps
    pair = Pair(kind, batch, args.seed, steps, args.precision)
    arch, own = step_layers(kind), step_layers(kind, own=True)
    # Each is compared with the ceiling of its own precision: pixyz with float32 products, jmvae with its own
    # (--precision); "ceiling" and "own" are jmvae's, "float32 ceiling" pixyz's when the two differ.
    low = (
        TrainConfig(precision=args.precision).precision_dtype() or torch.float32
    )  # args.precision: resolved in main
    replays = {
        "ceiling": MatmulReplay(arch, batch, dtype=low),
        "own": MatmulReplay(own, batch, executed=True, dtype=low),
    }
    if low != torch.float32:
        replays["float32 ceiling"] = MatmulReplay(arch, batch)
    # casts and Adam, which no product ceiling counts, over the model's parameters: TELBO's are JMVAE's (its
    # second pass of the decoders in step_layers reuses them)
    replays["traffic"] = ParameterTraffic(step_layers("jmvae"), dtype=low)
    runs = {
        "jmvae": lambda c: pair.run("jmvae", c),
        "pixyz": lambda c: pair.run("pixyz", c),
        **{name: (lambda c, r=r: r(len(c))) for name, r in replays.items()},
    }
    for name in runs:
        runs[name](pair.batches[:WARMUP])
    # Interleave finely: every slot of --slot steps runs all of them, in rotating order, so that the machine's
    # drifts in speed (+-15% from minute to minute here) fall on all of them alike; ratios are per round.
    rates: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for r in range(args.rounds):
        chunk = pair.batches[WARMUP + r * args.steps : WARMUP + (r + 1) * args.steps]
        seconds = dict.fromkeys(runs, 0.0)
        for k, i in enumerate(range(0, len(chunk), args.slot)):
            for name in order[k % len(order) :] + order[: k % len(order)]:
                seconds[name] += runs[name](chunk[i : i + args.slot])
        for name in runs:
            rates[name].append(batch * len(chunk) / seconds[name])
    share = {
        "jmvae": [a / c for a, c in zip(rates["jmvae"], rates["ceiling"])],
        "pixyz": [a / c for a, c in zip(rates["pixyz"], rates.get("float32 ceiling", rates["ceiling"]))],
        "jmvae_own": [a / c for a, c in zip(rates["jmvae"], rates["own"])],
        # the products plus the parameter traffic they need: a step can take no less than both
        "jmvae_floor": [
            a * (1 / c + 1 / t) for a, c, t in zip(rates["jmvae"], rates["ceiling"], rates["traffic"])
        ],
    }
    ratio = [a / b for a, b in zip(rates["jmvae"], rates["pixyz"])]

    # Test loss: the timed pair, then --loss-seeds - 1 more pairs (other initial weights, batches and noise,
    # untimed), since the two implementations sum in different orders and so drift apart like two seeds would.
    losses = [pair.test_losses()]
    for seed in range(args.seed + 1, args.seed + args.loss_seeds):
        extra = Pair(kind, batch, seed, steps, args.precision)
        for name in extra.runs:
            extra.run(name, extra.batches)
        losses.append(extra.test_losses())
    med = statistics.median
    return {
        "kind": kind,
        "batch": batch,
        "describe": pair.jm.describe(),
        "data": pair.data,
        "rates": rates,
        "median": {k: med(v) for k, v in rates.items()},
        "share": {k: med(v) for k, v in share.items()},
        "shares": share,
        "ratio": med(ratio),
        "flops": flops_per_sample(arch, batch),
        "flops_own": flops_per_sample(own, batch, executed=True),
        "losses": losses,
        "test": {k: statistics.fmean(l[k] for l in losses) for k in losses[0]},
        "steps": steps,
        "n_test": len(pair.data.test["x"]),
        "precision": args.precision,
    }


def batch_ms(m: dict, name: str) -> float:
    """Milliseconds of one step of `name` at its median rate."""
    return 1000 * m["batch"] / m["median"][name]


def report(m: dict, args) -> None:
    med, rates, share = m["median"], m["rates"], m["share"]
    print(
        f"\n== {m['kind'].upper()}, batch {m['batch']}: {WARMUP} warm-up + {args.rounds} rounds x "
        f"{args.steps} timed steps, interleaved every {args.slot} steps; same initial weights, batches and "
        "noise =="
    )
    print(f"   {m['describe']}")
    print(f"   {'':22}{'samples/s':>10}  {'share of ceiling':>16}   per round")
    low = m["precision"] != "float32"
    ceiling = "matmul ceiling (bf16)" if low else "matmul ceiling"
    for name, label, sh in (
        ("jmvae", "jmvae", share["jmvae"]),
        ("pixyz", "pixyz", share["pixyz"]),
        ("ceiling", ceiling, None),
        *((("float32 ceiling", "matmul ceiling (fp32)", None),) if low else ()),
        ("own", "jmvae's own products", None),
        ("traffic", "casts + Adam", None),
    ):
        s = f"{100 * sh:15.0f}%" if sh is not None else " " * 16
        print(f"   {label:22}{med[name]:10.0f}  {s}   " + " ".join(f"{v:.0f}" for v in rates[name]))
    print(
        f"   jmvae / pixyz         {m['ratio']:.2f}x (median of per-round ratios); jmvae's share per round: "
        + " ".join(f"{100 * v:.0f}%" for v in m["shares"]["jmvae"])
    )
    print(
        f"   FLOP/sample           {m['flops'] / 1e6:.1f} M in the founding architecture (3 products per "
        f"Linear), which the matmul ceiling replays; jmvae's step runs {m['flops_own'] / 1e6:.1f} M of them "
        "(attribute encoders on their classes, no input gradients for data): against the replay of those "
        f"alone jmvae is at {100 * share['jmvae_own']:.0f}%"
    )
    cast = "weights cast to bfloat16 and gradients back, " if low else ""
    print(
        f"   parameter traffic     {cast}Adam: {batch_ms(m, 'traffic'):.1f} ms a step against the ceiling's "
        f"{batch_ms(m, 'ceiling'):.1f} ms of products; jmvae reaches {100 * share['jmvae_floor']:.0f}% of "
        "the two together (the most the ceiling's share could be with them: "
        f"{100 * med['traffic'] / (med['ceiling'] + med['traffic']):.0f}%)"
    )
    need, floor = 2 * med["pixyz"], batch_ms(m, "own") + batch_ms(m, "traffic")
    need_ms = batch_ms(m, "pixyz") / 2
    print(
        f"   2x pixyz              needs {need:.0f} samples/s ({need_ms:.1f} ms a step, "
        f"{100 * need / med['ceiling']:.0f}% of the matmul ceiling): jmvae's own products and Adam take "
        f"{floor:.1f} ms, leaving {need_ms - floor:.1f} ms for everything else (now "
        f"{batch_ms(m, 'jmvae') - floor:.1f} ms)"
    )
    t, losses = m["test"], m["losses"]
    diffs = [l["jmvae"] - l["pixyz"] for l in losses]
    spread = f" ± {statistics.stdev(diffs):.2f} (std over seeds)" if len(diffs) > 1 else ""
    print(
        f"   test loss             jmvae {t['jmvae']:.1f}   pixyz {t['pixyz']:.1f}   after {m['steps']} "
        f"steps each, mean over {len(losses)} seed(s): jmvae's objective in nats/example on the "
        f"{m['n_test']} test examples, fixed noise"
    )
    print(
        "     per seed            "
        + "   ".join(f"{l['jmvae']:.1f} vs {l['pixyz']:.1f}" for l in losses)
        + f";  jmvae - pixyz = {statistics.fmean(diffs):+.2f}{spread}"
        f" (pixyz's own model.test on its weights: {statistics.fmean(l['pixyz_own'] for l in losses):.1f})"
    )


def interleaved(runs: dict, batches: list, batch: int, args) -> dict[str, list[float]]:
    """samples/s per round of two step functions: warm-up, then --rounds rounds of --steps steps, alternating
    every --slot steps (and which goes first), so the machine's drifts fall on both alike."""
    for run in runs.values():
        run(batches[:WARMUP])
    rates = {name: [] for name in runs}
    for r in range(args.rounds):
        chunk = batches[WARMUP + r * args.steps : WARMUP + (r + 1) * args.steps]
        seconds = dict.fromkeys(runs, 0.0)
        for k, i in enumerate(range(0, len(chunk), args.slot)):
            for name in list(runs) if k % 2 == 0 else list(runs)[::-1]:
                seconds[name] += runs[name](chunk[i : i + args.slot])
        for name in runs:
            rates[name].append(batch * len(chunk) / seconds[name])
    return rates


def objectives(batch: int, args) -> None:
    """samples/s of jmvae's default objective against the published one: same batches, interleaved."""
    cfgs = {
        name: TrainConfig(
            batch_size=batch, seed=args.seed, paper=(name == "published"), precision=args.precision
        )
        for name in ("published", "default")
    }
    models = {name: build(cfg, quiet=True) for name, cfg in cfgs.items()}
    runs = {}
    for name, (data, model) in models.items():
        model.train()
        runs[name] = jmvae_steps(
            model, make_optimizer(model, 1e-3), data.train, batch, cfgs[name].precision_dtype()
        )
    batches = batch_indices(
        len(models["default"][0].train["x"]), batch, WARMUP + args.rounds * args.steps, args.seed
    )
    rates = interleaved(runs, batches, batch, args)
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"\n== JMVAE objectives, batch {batch}: {args.rounds} rounds x {args.steps} steps, interleaved ==")
    for name, (_, model) in models.items():
        print(f"   {name:10} {med[name]:8.0f} samples/s   {model.describe()}")
    print(
        f"   the default objective's step costs {med['published'] / med['default']:.2f}x the published one's"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="timed training steps per round (default 200)")
    ap.add_argument(
        "--rounds", type=int, default=3, help="rounds; medians over rounds are reported (default 3)"
    )
    ap.add_argument(
        "--slot", type=int, default=5, help="steps each runs before the next takes over (default 5)"
    )
    ap.add_argument("--batch", type=int, nargs="+", default=[128], help="batch sizes (default 128)")
    ap.add_argument("--models", nargs="+", default=["jmvae", "telbo"], choices=["jmvae", "telbo"])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--precision",
        default=TrainConfig.precision,
        choices=PRECISIONS,
        help=f"jmvae's training precision, as `jmvae train --precision` (default {TrainConfig.precision}); "
        "pixyz and the matmul ceilings stay float32",
    )
    ap.add_argument(
        "--objectives",
        action="store_true",
        help="also time jmvae's default objective against the published one (no pixyz)",
    )
    ap.add_argument(
        "--loss-seeds",
        type=int,
        default=3,
        help="seeds whose pairs are trained (the first one timed) to compare test losses (default 3)",
    )
    args = ap.parse_args()
    flush_subnormals()  # as jmvae.train.train does; process-wide: pixyz's steps too
    if min(args.steps, args.rounds, args.slot, args.loss_seeds) < 1:
        ap.error("--steps, --rounds, --slot and --loss-seeds must be >= 1")
    torch.set_num_threads(args.threads)
    args.precision = TrainConfig(
        precision=args.precision
    ).resolved_precision()  # "auto": what this machine uses
    import pixyz

    print(f"machine: {machine()}")
    print(
        f"pixyz {pixyz.__version__}; Adam lr 1e-3 for both; jmvae's products in {args.precision}, pixyz and "
        "the float32 ceiling in float32, on CPU"
    )
    results = []
    for kind in args.models:
        for batch in args.batch:
            m = measure(kind, batch, args)
            if not results:
                d = m["data"]
                print(
                    f"data: {d.name}, {len(d.train['x'])} train / {len(d.test['x'])} test images from "
                    f"{d.source}"
                )
            results.append(m)
            report(m, args)

    print("\n== summary (samples/s and shares: medians over rounds) ==")
    print(
        f"   {'model':6} {'batch':>5} {'jmvae':>8} {'pixyz':>8} {'ratio':>6} {'ceiling':>8} {'jmvae%':>7} "
        f"{'pixyz%':>7} {'own%':>6} {'floor%':>7} {'test jmvae':>11} {'test pixyz':>11}"
    )
    for m in results:
        med, sh, t = m["median"], m["share"], m["test"]
        print(
            f"   {m['kind']:6} {m['batch']:5} {med['jmvae']:8.0f} {med['pixyz']:8.0f} {m['ratio']:5.2f}x "
            f"{med['ceiling']:8.0f} {100 * sh['jmvae']:6.0f}% {100 * sh['pixyz']:6.0f}% "
            f"{100 * sh['jmvae_own']:5.0f}% {100 * sh['jmvae_floor']:6.0f}% {t['jmvae']:11.1f} "
            f"{t['pixyz']:11.1f}"
        )
    if args.objectives:
        for batch in args.batch:
            objectives(batch, args)
    head = next((m for m in results if m["kind"] == "jmvae" and m["batch"] == 128), results[0])
    t = head["test"]
    print(
        f"{head['kind'].upper()} b{head['batch']}: {100 * head['share']['jmvae']:.0f}% of matmul ceiling "
        f"({100 * head['share']['jmvae_floor']:.0f}% with the parameter traffic), "
        f"{head['ratio']:.2f}x pixyz, test loss {t['jmvae']:.1f} vs {t['pixyz']:.1f}"
    )


if __name__ == "__main__":
    main()
