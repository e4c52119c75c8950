"""Training speed of jmvae's MVAE, MMVAE, MoPoE, MVTCAE and MMVAE+ against plain-PyTorch references.

The references are written the way the papers' public code writes them: a Python loop over the subsets
(MVAE, MoPoE) or the experts (MMVAE), a product of experts and a decoder pass per subset, densities from
`torch.distributions`. Each pair starts from the same weights (a deep copy of one jmvae model, so the very
same networks), sees the same batches, and is stepped by the same fused Adam; the timed steps alternate
every --slot steps. Then both are scored on the whole test set with jmvae's objective (fixed noise), for
the timed pair and for --loss-seeds - 1 more pairs trained from other seeds: equal within noise means the
two compute the same objective.

    JMVAE_OFFLINE=1 python benchmarks/zoo_speed.py --steps 100 --rounds 3        # the headline
    # smoke:
    JMVAE_OFFLINE=1 python benchmarks/zoo_speed.py --steps 10 --rounds 1 --loss-seeds 1 --loss-steps 20
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import timed_steps  # noqa: E402
from torch.distributions import Normal  # noqa: E402
from train_speed import WARMUP, batch_indices, interleaved, machine  # noqa: E402

from jmvae.config import TrainConfig  # noqa: E402
from jmvae.data.attributes import to_batch  # noqa: E402
from jmvae.subsets import nonempty_subsets, random_subsets  # noqa: E402
from jmvae.train import build, evaluate_loss  # noqa: E402


# -- the references ---------------------------------------------------------------------------------------
def log_lik(model, name: str, z: torch.Tensor, batch) -> torch.Tensor:
    return log_lik_of(model, name, model.decoders[name](z), batch)


def log_lik_of(model, name: str, logits: torch.Tensor, batch) -> torch.Tensor:
    if name == model.images[0].name:
        return -F.binary_cross_entropy_with_logits(
            logits, batch[name].expand_as(logits), reduction="none"
        ).sum(-1)
    target = batch[name].expand(logits.shape[:-1])
    return -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none").view(
        target.shape
    )


def weight(model, name: str) -> float:
    return 1.0 if name == model.images[0].name else model.attribute_weight


def poe(experts: list[Normal]) -> Normal:
    precision = 1 + sum(e.scale**-2 for e in experts)
    mean = sum(e.loc * e.scale**-2 for e in experts) / precision
    return Normal(mean, precision**-0.5)


def elbo_loss(model, batch, q: Normal, scored) -> torch.Tensor:
    z = q.rsample()
    recon = sum(weight(model, n) * log_lik(model, n, z, batch) for n in scored)
    kl = torch.distributions.kl_divergence(q, Normal(torch.zeros_like(z), torch.ones_like(z))).sum(-1)
    return -recon + kl


def mvae_reference(model, batch) -> torch.Tensor:
    experts = {n: Normal(*_params(model, n, batch)) for n in model.names}
    subsets = (
        [tuple(model.names)] + [(n,) for n in model.names] + random_subsets(model.names, model.random_subsets)
    )
    return sum(elbo_loss(model, batch, poe([experts[n] for n in s]), s) for s in subsets).mean()


def mopoe_reference(model, batch) -> torch.Tensor:
    experts = {n: Normal(*_params(model, n, batch)) for n in model.names}
    subsets = nonempty_subsets(model.names)
    return (
        sum(elbo_loss(model, batch, poe([experts[n] for n in s]), model.names) for s in subsets)
        / len(subsets)
    ).mean()


def mmvae_reference(model, batch) -> torch.Tensor:
    experts = [Normal(*_params(model, n, batch)) for n in model.names]
    bounds = []
    for q in experts:
        z = q.rsample((model.samples,))
        log_q = torch.logsumexp(torch.stack([e.log_prob(z).sum(-1) for e in experts]), 0) - math.log(
            len(experts)
        )
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_px = sum(weight(model, n) * log_lik(model, n, z, batch) for n in model.names)
        bounds.append(torch.logsumexp(log_pz + log_px - log_q, 0) - math.log(model.samples))
    return -torch.stack(bounds).mean()


def mvtcae_reference(model, batch) -> torch.Tensor:
    experts = [Normal(*_params(model, n, batch)) for n in model.names]
    precision = sum(e.scale**-2 for e in experts)  # the product of the experts alone, no prior expert
    q = Normal(sum(e.loc * e.scale**-2 for e in experts) / precision, precision**-0.5)
    z = q.rsample()
    recon = sum(weight(model, n) * log_lik(model, n, z, batch) for n in model.names)
    kl = torch.distributions.kl_divergence
    prior = kl(q, Normal(torch.zeros_like(z), torch.ones_like(z))).sum(-1)
    conditional = sum(kl(q, e).sum(-1) for e in experts)
    m, a = len(model.names), model.tc_alpha
    return ((m - a) / m * -recon + model.beta * ((1 - a) * prior + a / m * conditional)).mean()


def mmvaeplus_reference(model, batch) -> torch.Tensor:
    """As the MMVAE+ code writes it: per expert, a decoder pass per modality, its own w or one from r_n."""
    d = model.z_dim
    params = [_params(model, n, batch) for n in model.names]
    shared = [Normal(loc[..., :d], scale[..., :d]) for loc, scale in params]
    bounds = []
    for i, (loc, scale) in enumerate(params):
        z, w = (
            shared[i].rsample((model.samples,)),
            Normal(loc[..., d:], scale[..., d:]).rsample((model.samples,)),
        )
        log_px = 0
        for j, n in enumerate(model.names):
            decoder = model.decoders[n]
            w_n = w if i == j else Normal(torch.zeros_like(w), decoder.log_scale.exp()).rsample()
            logits = decoder.net(torch.cat([z, w_n], -1))
            log_px = log_px + weight(model, n) * log_lik_of(model, n, logits, batch)
        log_q = torch.logsumexp(torch.stack([e.log_prob(z).sum(-1) for e in shared]), 0) - math.log(
            len(shared)
        )
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1) + Normal(0.0, 1.0).log_prob(w).sum(-1)
        log_qw = Normal(loc[..., d:], scale[..., d:]).log_prob(w).sum(-1)
        bounds.append(
            torch.logsumexp(log_px + model.beta * (log_prior - log_q - log_qw), 0) - math.log(model.samples)
        )
    return -torch.stack(bounds).mean()


def _params(model, name, batch):
    q = model.encoders[name](batch[name])
    return q.loc, q.scale


REFERENCES = {
    "mvae": mvae_reference,
    "mopoe": mopoe_reference,
    "mmvae": mmvae_reference,
    "mvtcae": mvtcae_reference,
    "mmvaeplus": mmvaeplus_reference,
}


# -- timing -----------------------------------------------------------------------------------------------
def pair(kind: str, batch: int, seed: int):
    data, jm = build(TrainConfig(model=kind, batch_size=batch, seed=seed), quiet=True)
    ref = copy.deepcopy(jm)
    jm.train(), ref.train()
    runs = {
        "jmvae": timed_steps(jm, lambda s, i: jm.loss(to_batch(s, i))[0], data.train),
        "reference": timed_steps(ref, lambda s, i: REFERENCES[kind](ref, to_batch(s, i)), data.train),
    }
    return data, {"jmvae": jm, "reference": ref}, runs


def measure(kind: str, batch: int, args) -> dict:
    data, models, runs = pair(kind, batch, args.seed)
    batches = batch_indices(data.n_train, batch, WARMUP + args.rounds * args.steps, args.seed)
    torch.manual_seed(args.seed)
    rates = interleaved(runs, batches, batch, args)
    losses = []
    for seed in range(args.seed, args.seed + args.loss_seeds):
        d, ms, rs = pair(kind, batch, seed)
        steps = batch_indices(d.n_train, batch, args.loss_steps, seed)
        for run in rs.values():
            torch.manual_seed(seed)
            run(steps)
        losses.append({name: evaluate_loss(m, d.test, seed=seed)["loss"] for name, m in ms.items()})
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "kind": kind,
        "batch": batch,
        "describe": models["jmvae"].describe(),
        "rates": rates,
        "median": med,
        "ratio": statistics.median(a / b for a, b in zip(rates["jmvae"], rates["reference"])),
        "losses": losses,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="timed steps per round (default 100)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slot", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--loss-seeds", type=int, default=3, help="seeds trained to compare test losses (default 3)"
    )
    ap.add_argument(
        "--loss-steps", type=int, default=400, help="steps each of those pairs trains (default 400)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    rows = []
    for kind in args.models:
        m = measure(kind, args.batch, args)
        rows.append(m)
        print(
            f"\n== {kind.upper()}, batch {args.batch}: {args.rounds} rounds x {args.steps} steps, "
            f"interleaved every {args.slot}; same weights, batches, optimizer ==\n   {m['describe']}"
        )
        for name in ("jmvae", "reference"):
            print(
                f"   {name:10} {m['median'][name]:8.0f} samples/s   per round "
                + " ".join(f"{v:.0f}" for v in m["rates"][name])
            )
        diffs = [l["jmvae"] - l["reference"] for l in m["losses"]]
        print(
            f"   jmvae / reference {m['ratio']:.2f}x;  test loss after {args.loss_steps} steps, per seed: "
            + "   ".join(f"{l['jmvae']:.1f} vs {l['reference']:.1f}" for l in m["losses"])
            + f"  (jmvae - reference {statistics.fmean(diffs):+.2f}"
            + (f" ± {statistics.stdev(diffs):.2f} std" if len(diffs) > 1 else "")
            + ")"
        )
    print("\n== summary ==")
    for m in rows:
        t = {k: statistics.fmean(l[k] for l in m["losses"]) for k in ("jmvae", "reference")}
        print(
            f"   {m['kind']:6} b{m['batch']}: jmvae {m['median']['jmvae']:.0f} vs reference "
            f"{m['median']['reference']:.0f} samples/s = {m['ratio']:.2f}x; test loss {t['jmvae']:.1f} vs "
            f"{t['reference']:.1f}"
        )


if __name__ == "__main__":
    main()
