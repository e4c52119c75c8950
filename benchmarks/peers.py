"""jmvae against MultiVae, model by model, in one process: samples/s, peak memory, test loss and coherence.

For each model both libraries have, jmvae's model and MultiVae's are built from the same networks: MultiVae
gets the custom encoder and decoder classes its documentation asks for, wrapping plain MLPs of jmvae's
layer sizes (on one-hot attributes, as a MultiVae user writes them) that start from a copy of the jmvae
model's initial weights (jmvae's softplus scale is given to MultiVae as log_covariance = 2 log scale, so the
two compute the same function). Both see the same batches, are stepped by the same fused Adam in float32,
and alternate every --slot steps. Peak memory is the rise of the resident set over --memory-steps steps
of each library alone, in a fresh process each.

Quality: for --seeds seeds, both are trained --quality-steps steps on the same batches; the test loss is
then taken under each library's own objective for both sets of weights (the trained networks copied across),
and coherence is read by jmvae's attribute classifier with each library's own inference: images drawn from
q(z | both attributes) (cross), attributes decoded from q(z | image) (image -> attributes) and image and
attributes decoded from one draw of p(z) (joint).

MultiVae lives in its own virtual environment (its own torch and torchvision; never a dependency of jmvae):

    python3 -m venv .peers && . .peers/bin/activate
    pip install torch==2.13.0 torchvision==0.28.0 multivae==1.0.3 -e .
    JMVAE_OFFLINE=1 python benchmarks/peers.py --batch 128 512             # the headline (about an hour)
    JMVAE_OFFLINE=1 python benchmarks/peers.py --steps 10 --rounds 1 --seeds 1 --quality-steps 20  # smoke
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import timed_steps  # noqa: E402
from torch import nn  # noqa: E402
from train_speed import WARMUP, batch_indices, interleaved, machine  # noqa: E402

from jmvae.classifier import classifier_for  # noqa: E402
from jmvae.config import TrainConfig  # noqa: E402
from jmvae.data.attributes import to_batch  # noqa: E402
from jmvae.networks import GaussianEncoder, low_precision  # noqa: E402
from jmvae.train import build, evaluate_loss  # noqa: E402


def stub_torchvision_ops() -> None:
    """MultiVae imports torchvision, whose CUDA-linked wheel cannot register its `nms` operator beside a CPU
    torch; MultiVae never calls it, so a schema without a kernel will do."""
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # already there: a torchvision that loads
            pass
    stub_torchvision_ops.lib = lib  # type: ignore[attr-defined]  # the registration lives while lib does


stub_torchvision_ops()
import multivae.models as mv  # noqa: E402
from multivae.data.datasets.base import DatasetOutput  # noqa: E402
from multivae.models.nn.base_architectures import BaseJointEncoder  # noqa: E402
from pythae.models.base.base_utils import ModelOutput  # noqa: E402
from pythae.models.nn import BaseDecoder, BaseEncoder  # noqa: E402

# grey-level pixels are valid targets of the Bernoulli likelihood both libraries use; torch's argument
# checks (on by default, which MultiVae's Bernoulli keeps) reject them
torch.distributions.Distribution.set_default_validate_args(False)


# -- the pairs: jmvae's options and the MultiVae model closest to them -------------------------------------
@dataclass
class Pair:
    jmvae: dict  # TrainConfig options
    multivae: str  # the MultiVae class; its config is named <class>Config
    config: dict = field(default_factory=dict)  # its options besides the shared ones
    differs: str = ""  # where the two objectives differ


PAIRS = {
    "jmvae": Pair(
        dict(paper=True),
        "JMVAE",
        dict(alpha=1.0, warmup=0, beta=1.0),
        "MultiVae's KL terms go to each unimodal expert, jmvae's (the paper's) to q(z|x) and to "
        "q(z|y) = p(z) q(z|position) q(z|digit)",
    ),
    "mvae": Pair(dict(), "MVAE", dict(k=1, warmup=0, beta=1.0)),
    "mmvae": Pair(
        dict(),
        "MMVAE",
        dict(K=1, loss="iwae_looser", prior_and_posterior_dist="normal", learn_prior=False, beta=1.0),
    ),
    "mopoe": Pair(
        dict(sample_subsets=True),
        "MoPoE",
        dict(beta=1.0),
        "MultiVae's MoPoE puts the prior expert in the product of all three modalities only, jmvae in every "
        "subset's",
    ),
    "mvtcae": Pair(dict(), "MVTCAE", dict(alpha=0.1, beta=1.0)),
    "mmvaeplus": Pair(
        dict(),
        "MMVAEPlus",
        dict(K=1, loss="iwae_looser", prior_and_posterior_dist="normal", learn_modality_prior=True, beta=1.0),
    ),
    "telbo": Pair(
        dict(paper=True),
        "TELBO",
        dict(warmup=0, uses_likelihood_rescaling=False),
        "MultiVae's TELBO is the paper's two stages (the joint ELBO, then the unimodal ELBOs with the "
        "joint encoder and decoders frozen; here as many steps each as jmvae takes, and a step of each "
        "stage counts as one of jmvae's), jmvae's their sum in one step; its stage-2 KL reads the joint "
        "posterior's log variance where the unimodal one belongs; its ELBO(y) is one per attribute, "
        "jmvae's one of q(z|y) = p(z) q(z|position) q(z|digit); it has no posterior for two of the three "
        "modalities (no cross coherence from both attributes)",
    ),
}
STAGES = ("multivae stage 1", "multivae stage 2")  # TELBO's two steps in MultiVae
AUTO = "jmvae auto"  # jmvae's step in its default precision (--precision auto: bfloat16 on AMX/AVX512-BF16)
PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_addmm_activation")  # the matrix products
UPDATE = ("aten::_fused_adam_", "aten::_foreach_add_", "aten::_foreach_mul_")  # Adam's update (fused or not)


# -- MultiVae's custom architectures around jmvae-sized MLPs -----------------------------------------------
def gaussian_output(params: torch.Tensor, z_dim: int):
    """MultiVae's encoder output for a jmvae head's (loc, pre-softplus scale); past z_dim: the private w."""
    loc, s = params.chunk(2, dim=-1)
    log_var = 2 * torch.log(F.softplus(s))
    out = ModelOutput(embedding=loc[..., :z_dim], log_covariance=log_var[..., :z_dim])
    if loc.shape[-1] > z_dim:
        out["style_embedding"], out["style_log_covariance"] = loc[..., z_dim:], log_var[..., z_dim:]
    return out


def encoder(net: GaussianEncoder, z_dim: int):
    """A MultiVae encoder: net.params on the modality's input (a flat image or a one-hot attribute)."""

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net, self.latent_dim = net, z_dim

        def forward(self, x):
            return gaussian_output(self.net.params(x), z_dim)

    return Encoder()


def joint_encoder(net: GaussianEncoder, names: list[str], z_dim: int):
    """q(z | all): net.params on [x, one-hot(y_1), ...], as one concatenated input."""

    class Joint(BaseJointEncoder):
        def __init__(self):
            super().__init__()
            self.net, self.latent_dim = net, z_dim

        def forward(self, x: dict):
            return gaussian_output(self.net.params(torch.cat([x[n] for n in names], -1)), z_dim)

    return Joint()


def decoder(net: nn.Module):
    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    return Decoder()


def plain_encoder(enc: GaussianEncoder, in_dim: int) -> GaussianEncoder:
    """A GaussianEncoder on in_dim inputs with enc's weights (jmvae's ClassEncoder is one on one-hot rows)."""
    plain = GaussianEncoder(in_dim, enc.head.out_features // 2, enc.head.in_features)
    plain.load_state_dict(enc.state_dict())
    return plain


def plain_joint(joint, in_dim: int, z_dim: int, hidden: int) -> GaussianEncoder:
    """jmvae's JointEncoder as the single MLP on [x, one-hot(y)...] it stands for."""
    plain = GaussianEncoder(in_dim, z_dim, hidden)
    copy_joint(joint, plain, to="multivae")
    return plain


@torch.no_grad()
def copy_joint(joint, plain: GaussianEncoder, to: str) -> None:
    """Copy weights between jmvae's JointEncoder and its plain MLP (to "jmvae" or "multivae")."""
    if to == "jmvae":
        joint.set_first_layer(plain.body[0].weight, plain.body[0].bias)
    else:
        w, b = joint.first_layer()
        plain.body[0].weight.copy_(w), plain.body[0].bias.copy_(b)
    for a, b in ((joint.body[1], plain.body[2]), (joint.head, plain.head)):
        (a if to == "jmvae" else b).load_state_dict((b if to == "jmvae" else a).state_dict())


def multivae_model(kind: str, jm):
    """MultiVae's model of `kind` on copies of jm's networks and weights."""
    pair = PAIRS[kind]
    names, x, z = jm.names, jm.images[0].name, jm.z_dim
    sizes = {x: jm.images[0].size, **{a.name: a.size for a in jm.attributes}}
    lam = getattr(jm, "attribute_weight", 1.0)
    weights = {n: 1.0 if n == x else lam for n in names}
    options = dict(
        n_modalities=len(names),
        latent_dim=z,
        input_dims={n: (sizes[n],) for n in names},
        decoders_dist={n: "bernoulli" if n == x else "categorical" for n in names},
        uses_likelihood_rescaling=lam != 1,
        rescale_factors=weights,
    )
    if pair.multivae == "TELBO":  # its weights of log p(m|z): joint ELBO (lambda), unimodal ones (gamma)
        options |= dict(lambda_factors=weights, gamma_factors=weights)
    config = getattr(mv, pair.multivae + "Config")(**(options | pair.config))
    private = getattr(jm, "private_dim", None)
    if private:
        config.modalities_specific_dim = private
    encoders = {n: encoder(plain_encoder(jm.encoders[n], sizes[n]), z) for n in names}
    decoders = {n: decoder(copy.deepcopy(decoder_net(jm.decoders[n]))) for n in names}
    extra = {}
    if hasattr(jm, "joint_encoder"):
        net = plain_joint(jm.joint_encoder, sum(sizes.values()), z, jm.hidden)
        extra["joint_encoder"] = joint_encoder(net, names, z)
    peer = getattr(mv, pair.multivae)(config, encoders=encoders, decoders=decoders, **extra)
    if private:
        copy_private_priors(jm, peer, to="multivae")
    return peer


def decoder_net(dec: nn.Module) -> nn.Module:
    """The network of a decoder (an MMVAE+ PrivateDecoder holds its net beside the prior r_m)."""
    return getattr(dec, "net", dec)


@torch.no_grad()
def copy_private_priors(jm, peer, to: str) -> None:
    """MMVAE+'s r_m: jmvae's log scale, MultiVae's log variance (twice it)."""
    for n in jm.names:
        log_scale, log_var = jm.decoders[n].log_scale, peer.logvars_priors[n]
        if to == "multivae":
            log_var.copy_(2 * log_scale.view_as(log_var))
        else:
            log_scale.copy_(log_var.view(-1) / 2)


@torch.no_grad()
def copy_networks(jm, peer, to: str) -> None:
    """Copy every network's weights between a jmvae model and its MultiVae peer (to="jmvae" or "multivae")."""
    for n in jm.names:
        for a, b in (
            (jm.encoders[n], peer.encoders[n].net),
            (decoder_net(jm.decoders[n]), peer.decoders[n].net),
        ):
            (a if to == "jmvae" else b).load_state_dict((b if to == "jmvae" else a).state_dict())
    if getattr(jm, "private_dim", None):
        copy_private_priors(jm, peer, to)
    if hasattr(jm, "joint_encoder"):
        copy_joint(jm.joint_encoder, peer.joint_encoder.net, to)


# -- batches and steps -------------------------------------------------------------------------------------
def peer_batch(jm, split: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    """Rows idx as MultiVae reads them: the image as floats in [0, 1], each attribute one-hot."""
    out = {jm.images[0].name: split[jm.images[0].name][idx].float().div_(255)}
    for a in jm.attributes:
        out[a.name] = F.one_hot(split[a.name][idx], a.size).float()
    return out


def peer_loss(peer, batch: dict[str, torch.Tensor], epoch: int = 1_000_000) -> torch.Tensor:
    """MultiVae's loss per example (some of its models return the batch's sum); by default past any warm-up
    (TELBO: epoch 0 is its first stage, later ones its second)."""
    out = peer(DatasetOutput(data=batch), epoch=epoch)
    return out.loss_sum / len(next(iter(batch.values()))) if "loss_sum" in out else out.loss


def peer_steps(peer, jm, split, epoch: int = 1_000_000):
    """Timed steps of MultiVae's model (TELBO: epoch 0 its first stage, later ones its second)."""
    return timed_steps(peer, lambda s, i: peer_loss(peer, peer_batch(jm, s, i), epoch), split)


def pair_of(kind: str, batch: int, seed: int, auto: bool = False):
    """(data, jmvae model, MultiVae model, {library: step function}) from one seed's initial weights; `auto`:
    also jmvae's step in the precision `jmvae train` picks on this machine, if that is not float32."""
    cfg = TrainConfig(model=kind, batch_size=batch, seed=seed, **PAIRS[kind].jmvae)
    data, jm = build(cfg, quiet=True)
    peer = multivae_model(kind, jm)
    jm.train(), peer.train()
    runs = {"jmvae": timed_steps(jm, lambda s, i: jm.loss(to_batch(s, i))[0], data.train)}
    if auto and cfg.resolved_precision() != "float32":  # what `jmvae train` runs here by default
        fast, dtype = copy.deepcopy(jm), cfg.precision_dtype()

        def low(s, i):
            with low_precision(dtype):
                return fast.loss(to_batch(s, i))[0]

        runs[AUTO] = timed_steps(fast, low, data.train)
    if kind == "telbo":  # stage 1 trains `peer`; stage 2 (which freezes what it does not train) its copy
        second = copy.deepcopy(peer)
        runs[STAGES[0]] = peer_steps(peer, jm, data.train, epoch=0)
        runs[STAGES[1]] = peer_steps(second, jm, data.train)
    else:
        runs["multivae"] = peer_steps(peer, jm, data.train)
    return data, jm, peer, runs


# -- quality -----------------------------------------------------------------------------------------------
@torch.no_grad()
def peer_test_loss(jm, peer, split, seed: int, chunk: int = 2048) -> float:
    """MultiVae's objective on the whole split (fixed noise), per example; TELBO's: both stages' losses."""
    peer.eval()
    torch.manual_seed(seed)
    n = len(split[jm.images[0].name])
    total = 0.0
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n))
        batch = peer_batch(jm, split, idx)
        loss = peer_loss(peer, batch) + (peer_loss(peer, batch, 0) if isinstance(peer, mv.TELBO) else 0)
        total += float(loss) * len(idx) / n
    peer.train()
    return total


@torch.no_grad()
def coherence(library: str, jm, peer, data, clf, n: int, seed: int) -> dict[str, float | None]:
    """Cross (both attributes -> image), image -> attributes and joint coherence, each library's own inference
    and generation (jmvae: posterior and decoders; MultiVae: encode, decode, generate_from_prior), read by
    jmvae's classifier, on the first n test examples and n draws of the prior. None: the library has no
    posterior for that subset. MultiVae's mixtures pick one expert per call with numpy's generator, seeded
    here too."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    x, attrs = jm.images[0].name, jm.attribute_names
    test = {k: v[:n] for k, v in data.test.items()}
    idx = torch.arange(len(test[x]))
    if library == "jmvae":
        jm.eval()
        b = to_batch(test, idx)

        def generate(names: list[str] | None) -> dict[str, torch.Tensor]:
            z = (
                torch.randn(n, jm.z_dim)
                if names is None
                else jm.posterior({m: b[m] for m in names}).rsample()
            )
            return {m: jm.decoders[m](z) for m in jm.names}
    else:
        peer.eval()
        inputs = DatasetOutput(data=peer_batch(jm, test, idx))

        def generate(names: list[str] | None) -> dict[str, torch.Tensor]:
            code = peer.generate_from_prior(n) if names is None else peer.encode(inputs, cond_mod=names)
            return dict(peer.decode(code))

    def all_right(read: dict, truth: dict) -> float:
        return float(torch.stack([read[a] == truth[a] for a in attrs]).all(0).float().mean())

    try:
        cross: float | None = all_right(clf.predict({x: torch.sigmoid(generate(attrs)[x])}), test)
    except ValueError:  # MultiVae's TELBO: "Conditioning on subset ... is not handled"
        cross = None
    from_x = generate([x])
    to_attrs = all_right({a: from_x[a].argmax(-1) for a in attrs}, test)
    drawn = generate(None)
    joint = all_right(clf.predict({x: torch.sigmoid(drawn[x])}), {a: drawn[a].argmax(-1) for a in attrs})
    jm.train(), peer.train()
    return {"cross": cross, "image->attributes": to_attrs, "joint": joint}


@torch.no_grad()
def check_same_networks(jm, peer, split) -> None:
    """Stop unless the MultiVae model holds jm's very networks: through MultiVae's wrappers every encoder
    gives jm's posterior (log variance = 2 log scale) and every decoder jm's logits, and its weights copied
    back into a clone of jm equal jm's and give jm's loss with the same noise on a slice of `split`."""
    rows = {k: v[:512] for k, v in split.items()}
    b, pb = to_batch(rows, slice(None)), peer_batch(jm, rows, slice(None))

    def close(a: torch.Tensor, c: torch.Tensor) -> bool:
        return torch.allclose(a, c, rtol=1e-4, atol=1e-5)

    wrong = []
    for n in jm.names:
        q, out = jm.encoders[n](b[n]), peer.encoders[n](pb[n])
        loc = torch.cat([out.embedding, out.get("style_embedding", out.embedding[..., :0])], -1)
        log_var = torch.cat([out.log_covariance, out.get("style_log_covariance", loc[..., :0])], -1)
        net = decoder_net(jm.decoders[n])
        z = torch.randn(8, next(m for m in net.modules() if isinstance(m, nn.Linear)).in_features)
        if not (close(q.loc, loc) and close(2 * q.scale.log(), log_var)):
            wrong.append(f"encoder {n}")
        if not close(net(z), peer.decoders[n](z).reconstruction):
            wrong.append(f"decoder {n}")
    if hasattr(jm, "joint_encoder"):
        q = jm.posterior(b)
        out = peer.joint_encoder(pb)
        if not (close(q.loc, out.embedding) and close(2 * q.scale.log(), out.log_covariance)):
            wrong.append("joint encoder")
    clone = copy.deepcopy(jm)
    copy_networks(clone, peer, to="jmvae")
    wrong += [k for k, v in clone.state_dict().items() if not torch.equal(v, jm.state_dict()[k])]
    a, c = (evaluate_loss(m, rows, seed=0)["loss"] for m in (jm, clone))
    if wrong or abs(a - c) > 1e-4 * abs(a):
        raise SystemExit(
            f"peers: the MultiVae networks differ from jmvae's ({wrong[:3]}; loss {a} against {c})"
        )


def quality(kind: str, batch: int, seed: int, args) -> dict:
    data, jm, peer, runs = pair_of(kind, batch, seed)
    check_same_networks(jm, peer, data.test)
    steps = batch_indices(data.n_train, batch, args.quality_steps, seed)
    if kind == "telbo":  # MultiVae: stage 1 on every batch, then stage 2 on every batch, from those weights
        torch.manual_seed(seed)
        runs.pop(STAGES[0])(steps)
        second = copy.deepcopy(peer)
        runs[STAGES[1]] = peer_steps(second, jm, data.train)
        torch.manual_seed(seed + 1)
        runs.pop(STAGES[1])(steps)
        peer = second
    for run in runs.values():
        torch.manual_seed(seed)
        run(steps)
    # each set of trained weights under both objectives: copy the other library's networks into a clone
    jm_of_peer, peer_of_jm = copy.deepcopy(jm), copy.deepcopy(peer)
    copy_networks(jm_of_peer, peer, to="jmvae")
    copy_networks(jm, peer_of_jm, to="multivae")
    clf, _ = classifier_for(data)
    return {
        "loss_jmvae_objective": {
            "jmvae": evaluate_loss(jm, data.test, seed=seed)["loss"],
            "multivae": evaluate_loss(jm_of_peer, data.test, seed=seed)["loss"],
        },
        "loss_multivae_objective": {
            "jmvae": peer_test_loss(jm, peer_of_jm, data.test, seed),
            "multivae": peer_test_loss(jm, peer, data.test, seed),
        },
        "coherence": {
            lib: coherence(lib, jm, peer, data, clf, args.coherence_examples, seed)
            for lib in ("jmvae", "multivae")
        },
    }


# -- memory: each library alone in a fresh process ---------------------------------------------------------
def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20


def probe_memory(library: str, kind: str, batch: int, steps: int) -> None:
    """Print the highest resident set during `steps` steps above the one before them (sampled every ms)."""
    data, jm, peer, runs = pair_of(kind, batch, 0)
    indices = batch_indices(data.n_train, batch, steps, 0)
    run = runs[library]
    del runs
    gc.collect()
    before, peak, done = rss_mb(), [0.0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run(indices)
    done.set()
    watcher.join()
    print(json.dumps({"peak_mb": peak[0] - before}))


def peak_memory(library: str, kind: str, batch: int, args) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--probe", library, kind, str(batch), "--threads", str(args.threads)]
        + ["--memory-steps", str(args.memory_steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def peak_memories(kind: str, batch: int, args) -> dict[str, float]:
    """Each library's peak (MultiVae's TELBO: the larger of its two stages')."""
    peer = list(STAGES) if kind == "telbo" else ["multivae"]
    return {
        "jmvae": peak_memory("jmvae", kind, batch, args),
        "multivae": max(peak_memory(lib, kind, batch, args) for lib in peer),
    }


# -- the table ---------------------------------------------------------------------------------------------
def products_ms(run, batches: list) -> tuple[float, float, float]:
    """ms per step of `run` over `batches` in matrix products, in the optimizer's update and in all, by
    torch's profiler (self times, so nothing is counted twice)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(batches)
    events = prof.key_averages()

    def ms(keys) -> float:
        return (
            sum(e.self_cpu_time_total for e in events if keys is None or e.key in keys) / 1000 / len(batches)
        )

    return ms(PRODUCTS), ms(UPDATE), ms(None)


def speed(kind: str, batch: int, args) -> dict:
    data, jm, peer, runs = pair_of(kind, batch, args.seed, auto=True)
    batches = batch_indices(
        data.n_train, batch, WARMUP + args.rounds * args.steps + args.profile_steps, args.seed
    )
    torch.manual_seed(args.seed)
    rates = interleaved(runs, batches, batch, args)
    profiled = batches[-args.profile_steps :]
    products = {lib: products_ms(runs[lib], profiled) for lib in runs if lib != AUTO}
    if STAGES[0] in rates:  # a step of each stage per batch: what updates every network once, as jmvae's step
        rates["multivae"] = [1 / (1 / a + 1 / b) for a, b in zip(rates[STAGES[0]], rates[STAGES[1]])]
    return {
        "rates": rates,
        "median": {k: statistics.median(v) for k, v in rates.items()},
        "ratio": statistics.median(a / b for a, b in zip(rates["jmvae"], rates["multivae"])),
        "memory": peak_memories(kind, batch, args),
        "products": products,
        "describe": jm.describe(),
    }


def auto_ratio(m: dict) -> float:
    """jmvae in its default precision over MultiVae: the median of the per-round ratios."""
    return statistics.median(a / b for a, b in zip(m["rates"][AUTO], m["rates"]["multivae"]))


def mean_sd(values: list, fmt: str = "{:.3f}") -> str:
    if None in values:
        return "n/a"
    m = statistics.fmean(values)
    return fmt.format(m) + (" ± " + fmt.format(statistics.stdev(values)) if len(values) > 1 else "")


def report(kind: str, rows: dict, qualities: list[dict], args) -> None:
    pair = PAIRS[kind]
    print(f"\n== {kind.upper()} (MultiVae {pair.multivae}: {pair.config}) ==")
    if pair.differs:
        print(f"   objectives differ: {pair.differs}")
    for batch, m in rows.items():
        print(
            f"   batch {batch}: jmvae {m['median']['jmvae']:.0f} vs MultiVae {m['median']['multivae']:.0f} "
            f"samples/s = {m['ratio']:.2f}x  (per round: "
            + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(m["rates"]["jmvae"], m["rates"]["multivae"]))
            + f");  peak memory {m['memory']['jmvae']:.0f} vs {m['memory']['multivae']:.0f} MB"
        )
        if AUTO in m["median"]:
            print(
                f"      jmvae in its default precision here (--precision auto: bfloat16 products): "
                f"{m['median'][AUTO]:.0f} samples/s = {auto_ratio(m):.2f}x MultiVae's float32"
            )
        print(
            "      ms per step in matrix products + Adam's update / whole step (profiled): "
            + ", ".join(
                f"{lib} {mm:.1f} + {adam:.1f} / {every:.1f}"
                for lib, (mm, adam, every) in m["products"].items()
            )
        )
        if STAGES[0] in m["median"]:
            print(
                "      MultiVae's rate is that of a step of each of its stages: "
                + ", ".join(f"{s} {m['median'][s]:.0f}" for s in STAGES)
            )
    if not qualities:
        return
    print(f"   after {args.quality_steps} steps at batch {args.quality_batch}, {len(qualities)} seeds:")
    for objective in ("jmvae", "multivae"):
        key = f"loss_{objective}_objective"
        print(
            f"   test loss, {objective}'s objective: jmvae's weights "
            + mean_sd([q[key]["jmvae"] for q in qualities], "{:.1f}")
            + ", MultiVae's "
            + mean_sd([q[key]["multivae"] for q in qualities], "{:.1f}")
        )
    for what in ("cross", "image->attributes", "joint"):
        print(
            f"   {what:18} jmvae "
            + mean_sd([q["coherence"]["jmvae"][what] for q in qualities])
            + "   MultiVae "
            + mean_sd([q["coherence"]["multivae"][what] for q in qualities])
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument(
        "--batch", type=int, nargs="*", default=[128, 512], help="batch sizes timed (none: quality only)"
    )
    ap.add_argument("--steps", type=int, default=60, help="timed steps per round (default 60)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slot", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the quality columns (default 3)")
    ap.add_argument(
        "--quality-steps", type=int, default=1500, help="steps each library trains (default 1500)"
    )
    ap.add_argument("--quality-batch", type=int, default=128)
    ap.add_argument("--coherence-examples", type=int, default=2000)
    ap.add_argument("--memory-steps", type=int, default=10)
    ap.add_argument("--profile-steps", type=int, default=10, help="steps of each profiled (default 10)")
    ap.add_argument("--json", help="also write every number to this file")
    ap.add_argument("--probe", nargs=3, metavar=("RUN", "MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        library, kind, batch = args.probe
        probe_memory(library, kind, int(batch), args.memory_steps)
        return
    print(
        f"machine: {machine()}; {torch.get_num_threads()} threads; jmvae {version('jmvae')}, "
        f"multivae {version('multivae')}, torch {torch.__version__}"
    )
    results = {}
    for kind in args.models:
        rows = {batch: speed(kind, batch, args) for batch in args.batch}
        qualities = [
            quality(kind, args.quality_batch, s, args) for s in range(args.seed, args.seed + args.seeds)
        ]
        report(kind, rows, qualities, args)
        results[kind] = {"speed": rows, "quality": qualities}
        sys.stdout.flush()
    print("\n== summary: samples/s jmvae / MultiVae ==")
    for kind, r in results.items():
        print(
            f"   {kind:9} "
            + "   ".join(
                f"b{b}: {m['ratio']:.2f}x"
                + (f" (auto precision {auto_ratio(m):.2f}x)" if AUTO in m["rates"] else "")
                for b, m in r["speed"].items()
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
