"""Time to quality: training wall time until the held-out loss first reaches what the pixyz reference reaches
after the founding experiment's 10 epochs (1,980 steps of batch 128 on full MNIST's position-digit split).

The level: the pixyz reference (benchmarks/common.py, the published JMVAE objective) trained --reference-steps
steps; its test loss is the published JMVAE loss on the whole test set, its weights mapped into a jmvae model,
fixed noise. Then each contender trains from its own seeded start (the same seed, batches drawn as the trainer
draws them), and every --every steps its weights are scored by that same definition (a jmvae model with the
published objective, the contender's weights loaded), so a contender that trains another objective (jmvae's
default adds terms) is judged on the published one. Only the training steps are timed; the contenders run
interleaved chunk by chunk, so the machine's drift falls on all alike. The time a contender needs is linearly
interpolated between the two scorings around the crossing.

    JMVAE_OFFLINE=1 python benchmarks/time_to_quality.py   # pixyz; jmvae --paper at 128 and at the default's
                                                           # batch; default
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
from common import copy_weights, pixyz_batch, pixyz_reference  # noqa: E402
from train_speed import batch_indices, machine  # noqa: E402

from jmvae.config import PRECISIONS, TrainConfig  # noqa: E402
from jmvae.train import build, evaluate_loss, flush_subnormals, make_optimizer, train_steps  # noqa: E402


class Contender:
    """One training run advanced chunk by chunk; `seconds` counts its training steps only."""

    def __init__(
        self, name: str, scorer, test: dict[str, torch.Tensor], batches: list[torch.Tensor], seed: int
    ):
        self.name, self.scorer, self.test, self.batches, self.done, self.seconds = (
            name,
            scorer,
            test,
            batches,
            0,
            0.0,
        )
        self.batch = len(batches[0])
        torch.manual_seed(seed)
        self.rng = torch.get_rng_state()
        self.curve: list[tuple[int, float, float]] = []  # (steps, training seconds, published test loss)

    def advance(self, steps: int) -> None:
        torch.set_rng_state(self.rng)
        chunk = self.batches[self.done : self.done + steps]
        t0 = time.perf_counter()
        self.step(chunk)
        self.seconds += time.perf_counter() - t0
        self.rng = torch.get_rng_state()
        self.done += len(chunk)
        self.curve.append((self.done, self.seconds, self.score()))

    def score(self) -> float:
        """The published JMVAE loss on the test set, this contender's weights in the scorer, fixed noise."""
        self.load_into_scorer()
        return evaluate_loss(self.scorer, self.test, seed=0)["loss"]

    def time_to(self, level: float) -> tuple[float, int] | None:
        """(seconds, steps) when the curve first reaches `level`, interpolated; None if it never does."""
        prev = (0, 0.0, float("inf"))
        for point in self.curve:
            if point[2] <= level:
                if prev[2] == float("inf"):
                    return point[1], point[0]
                f = (prev[2] - level) / (prev[2] - point[2])
                return prev[1] + f * (point[1] - prev[1]), round(prev[0] + f * (point[0] - prev[0]))
            prev = point
        return None


class Jmvae(Contender):
    def __init__(self, name: str, cfg: TrainConfig, scorer, test, batches, seed: int):
        super().__init__(name, scorer, test, batches, seed)
        self.data, self.model = build(cfg, quiet=True)
        self.optimizer = make_optimizer(self.model, cfg.lr)
        self.precision = cfg.precision_dtype()
        self.model.train()

    def step(self, chunk) -> None:
        sums, _ = train_steps(
            self.model,
            self.optimizer,
            self.data.train,
            torch.cat(chunk),
            len(chunk[0]),
            len(chunk),
            precision=self.precision,
        )
        sums.tolist()  # the trainer reads its sums back once per epoch

    def load_into_scorer(self) -> None:
        self.scorer.load_state_dict(self.model.state_dict())


class Pixyz(Contender):
    def __init__(self, name: str, scorer, start, data, batches, seed: int, lr: float):
        super().__init__(name, scorer, data.test, batches, seed)
        self.model, self.dists = pixyz_reference("jmvae", lr=lr)
        copy_weights(start, self.dists, to="pixyz")  # the published model's seeded initial weights
        self.split = data.train

    def step(self, chunk) -> None:
        total = 0.0
        for idx in chunk:
            total = total + self.model.train(pixyz_batch(self.split, idx)).detach()
        float(total)

    def load_into_scorer(self) -> None:
        copy_weights(self.scorer, self.dists, to="jmvae")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--reference-steps", type=int, default=1980, help="pixyz's length (default: 10 epochs of full MNIST)"
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=3960,
        help="the most steps jmvae --paper trains (default: 20 epochs); "
        "the default contender trains as many samples at its own batch size",
    )
    ap.add_argument(
        "--every",
        type=int,
        default=99,
        help="steps of --batch between scorings (default 99: half an epoch); "
        "the default contender is scored after as many samples",
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=128,
        help="pixyz's and jmvae --paper's batch (default 128); jmvae's "
        "default trains at its own (--batch-size of jmvae train)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--precision",
        default=TrainConfig.precision,
        choices=PRECISIONS,
        help=f"the jmvae contenders' training precision (default {TrainConfig.precision}); pixyz: float32",
    )
    args = ap.parse_args()
    flush_subnormals()  # as jmvae.train.train does; process-wide: pixyz's steps too
    torch.set_num_threads(args.threads)
    print(
        f"machine: {machine()}; jmvae's products in "
        f"{TrainConfig(precision=args.precision).resolved_precision()}"
    )

    published = TrainConfig(batch_size=args.batch, seed=args.seed, paper=True, precision=args.precision)
    data, scorer = build(published, quiet=True)  # the scorer: a jmvae model with the published objective
    scorer.eval()
    batches = batch_indices(data.n_train, args.batch, max(args.steps, args.reference_steps), args.seed)
    _, start = build(published, quiet=True)
    default = TrainConfig(seed=args.seed, precision=args.precision)  # its own batch size and learning rate
    default_steps = args.steps * args.batch // default.batch_size
    default_batches = batch_indices(data.n_train, default.batch_size, default_steps, args.seed)
    # the published objective at jmvae train's own batch and lr (`jmvae train --paper` keeps the paper's 128 /
    # 1e-3)
    paper_at_default = replace(published, batch_size=default.batch_size, lr=default.lr)
    contenders: list[Contender] = [
        Pixyz(
            "pixyz (published JMVAE)",
            copy.deepcopy(scorer),
            start,
            data,
            batches[: args.reference_steps],
            args.seed,
            published.lr,
        ),
        Jmvae("jmvae --paper", published, copy.deepcopy(scorer), data.test, batches[: args.steps], args.seed),
        Jmvae(
            f"jmvae --paper, b{default.batch_size}",
            paper_at_default,
            copy.deepcopy(scorer),
            data.test,
            default_batches,
            args.seed,
        ),
        Jmvae(
            f"jmvae (default, b{default.batch_size})",
            default,
            copy.deepcopy(scorer),
            data.test,
            default_batches,
            args.seed,
        ),
    ]
    print(
        f"data: {data.name} from {data.source}, {data.n_train} train / {data.n_test} test images; batch "
        f"{args.batch} (jmvae's default: {default.batch_size} at lr {default.lr:g}); scored every "
        f"{args.every * args.batch:,} samples on the test set with the published JMVAE loss (nats/example)"
    )

    k = 0
    while any(c.done < len(c.batches) for c in contenders):
        active = [c for c in contenders if c.done < len(c.batches)]
        for c in active[k % len(active) :] + active[: k % len(active)]:
            c.advance(max(1, args.every * args.batch // c.batch))
        k += 1
    level = contenders[0].curve[-1][2]
    ref = contenders[0].time_to(level)
    print(
        f"\nlevel: {level:.2f} nats, pixyz's test loss after {contenders[0].done} steps "
        f"({contenders[0].seconds:.1f} s of training steps)"
    )
    print(f"{'':26}{'steps':>7}{'seconds':>9}{'samples/s':>11}{'speed-up':>10}   final loss")
    for c in contenders:
        reached = c.time_to(level)
        rate = c.done * c.batch / c.seconds
        if reached is None:
            print(
                f"{c.name:26}{'never':>7}{'':>9}{rate:11.0f}{'':>10}   {c.curve[-1][2]:.2f} after {c.done} "
                "steps"
            )
        else:
            print(
                f"{c.name:26}{reached[1]:7d}{reached[0]:9.1f}{rate:11.0f}{ref[0] / reached[0]:9.2f}x   "
                f"{c.curve[-1][2]:.2f} after {c.done} steps"
            )


if __name__ == "__main__":
    main()
