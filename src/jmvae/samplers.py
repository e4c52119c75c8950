"""Post-hoc latent samplers: a density fitted after training to the training codes, for joint generation.

Decoding z ~ p(z) puts images where no training code lies (joint coherence 0.59-0.98 over the zoo,
docs/results-zoo.md); drawing z from a density fitted to the training examples' codes (by default the means
of q(z|x)) keeps them where the decoders learnt, as MultiVae's samplers do. Each kind is one class here
plus a SAMPLERS line:

- gmm: a Gaussian mixture with full covariances, fitted by EM (scikit-learn's GaussianMixture, k-means
  initialised), then sampled and scored as a torch.distributions mixture;
- maf: a masked autoregressive flow (zuko's MAF), fitted by maximum likelihood with Adam on the codes
  standardised per dimension.

A fitted sampler is stored in the run as `sampler-<kind>.pt` (its options and tensors, no pickled code).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily, MultivariateNormal

from .data.attributes import AttributeDataset, batches, to_batch
from .errors import UserError
from .networks import own_stream
from .posteriors import Mixture
from .runs import load_torch, save_torch

# The code of a training example: the mean or one draw of q(z|x), or of q(z | every modality); "auto" is
# the joint posterior's mean, or q(z|x)'s where the joint posterior is a mixture (whose mean lies between
# its components) or no example observes every attribute (docs/results-samplers.md).
CODES = ("auto", "image-mean", "image-draw", "joint-mean", "joint-draw")
POOL = 100_000  # a conditioned query's draws are resampled from this many draws of the sampler
DECODED_ROWS = 8192  # latents decoded at once when weighing the pool
HELD_OUT = 0.1  # share of the codes kept out of the fit to score it (held-out log-likelihood per code)


@dataclass
class SamplerConfig:
    kind: str = "gmm"
    components: int = 10  # gmm: Gaussians in the mixture
    transforms: int = 3  # maf: autoregressive transforms
    hidden: int = 64  # maf: width of each transform's two hidden layers
    steps: int = 3000  # maf: Adam steps (batches of 512 codes)
    codes: str = "auto"  # what is fitted, one code per training example (CODES)
    seed: int = 0

    def validate(self) -> None:
        if self.kind not in SAMPLERS:
            raise UserError(f"--sampler {self.kind} (allowed: {', '.join(SAMPLERS)})")
        for name in ("components", "transforms", "hidden", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
                raise UserError(f"--{name} {value} (allowed: an integer from 1 to 100000)")
        if self.codes not in CODES:
            raise UserError(f"--codes {self.codes} (allowed: {', '.join(CODES)})")


class LatentSampler(nn.Module):
    """A density over z fitted to codes: `fit`, then `sample` and `log_prob` like a distribution."""

    kind: ClassVar[str]

    def __init__(self, cfg: SamplerConfig, z_dim: int):
        super().__init__()
        self.cfg, self.z_dim = cfg, z_dim

    def fit(self, codes: torch.Tensor) -> None:
        raise NotImplementedError

    def distribution(self) -> Distribution:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.distribution().sample((n,))

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(z)

    def describe(self) -> str:
        raise NotImplementedError

    @torch.no_grad()
    def conditioned(self, model, given: dict[str, torch.Tensor], n: int, pool: int = POOL) -> torch.Tensor:
        """n draws of z ~ p_fit(z | given) ∝ p_fit(z) prod_m p(m|z) for each of B queries, (n, B, z_dim):
        one pool of this sampler's draws, resampled per query by the given modalities' likelihoods under
        their decoders (sampling importance resampling)."""
        device = next(model.parameters()).device
        z = self.sample(pool).to(device)
        log_w = torch.zeros(())
        for name, values in given.items():
            logits = torch.cat([model.decoders[name](part) for part in z.split(DECODED_ROWS)])
            log_w = log_w + model.modalities[name].log_likelihood_pairs(logits, values.to(device))  # (P, B)
        picks = torch.multinomial(torch.softmax(log_w, 0).T, n, replacement=True)  # (B, n)
        return z[picks].transpose(0, 1)


class GaussianMixtureSampler(LatentSampler):
    kind = "gmm"
    weights: torch.Tensor  # buffers (K,), (K, d), (K, d, d)
    means: torch.Tensor
    scale_tril: torch.Tensor

    def __init__(self, cfg: SamplerConfig, z_dim: int):
        super().__init__(cfg, z_dim)
        k = cfg.components
        self.register_buffer("weights", torch.full((k,), 1 / k))
        self.register_buffer("means", torch.zeros(k, z_dim))
        self.register_buffer("scale_tril", torch.eye(z_dim).expand(k, z_dim, z_dim).clone())

    def fit(self, codes: torch.Tensor) -> None:
        from sklearn.mixture import GaussianMixture  # imported here: the rest of jmvae never needs it

        if len(codes) < self.cfg.components:
            raise UserError(
                f"--components {self.cfg.components} with {len(codes)} training codes (allowed: at most "
                "as many components as codes)"
            )
        gmm = GaussianMixture(self.cfg.components, covariance_type="full", random_state=self.cfg.seed)
        gmm.fit(codes.double().numpy())
        self.weights.copy_(torch.from_numpy(gmm.weights_))
        self.means.copy_(torch.from_numpy(gmm.means_))
        self.scale_tril.copy_(torch.linalg.cholesky(torch.from_numpy(gmm.covariances_)))

    def distribution(self) -> Distribution:
        return MixtureSameFamily(
            Categorical(probs=self.weights), MultivariateNormal(self.means, scale_tril=self.scale_tril)
        )

    def describe(self) -> str:
        return f"Gaussian mixture, {self.cfg.components} components (EM, scikit-learn)"


class FlowSampler(LatentSampler):
    kind = "maf"
    flow: Any  # a zuko flow: flow() is the distribution of the standardised codes
    shift: torch.Tensor  # buffers (d,)
    scale: torch.Tensor

    def __init__(self, cfg: SamplerConfig, z_dim: int):
        super().__init__(cfg, z_dim)
        import zuko

        with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's stream untouched
            torch.manual_seed(cfg.seed)
            self.flow = zuko.flows.MAF(
                z_dim, transforms=cfg.transforms, hidden_features=(cfg.hidden, cfg.hidden), randperm=False
            )
        self.register_buffer("shift", torch.zeros(z_dim))  # codes are standardised: z = shift + scale * u
        self.register_buffer("scale", torch.ones(z_dim))

    def fit(self, codes: torch.Tensor) -> None:
        self.shift.copy_(codes.mean(0))
        self.scale.copy_(codes.std(0).clamp_min(1e-6))
        u = (codes - self.shift) / self.scale
        generator = torch.Generator().manual_seed(self.cfg.seed)
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.cfg.steps)
        with torch.enable_grad():
            for _ in range(self.cfg.steps):
                batch = u[torch.randint(len(u), (min(512, len(u)),), generator=generator)]
                loss = -self.flow().log_prob(batch).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.shift + self.scale * self.flow().sample((n,))

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow().log_prob((z - self.shift) / self.scale) - self.scale.log().sum()

    def describe(self) -> str:
        return (
            f"masked autoregressive flow, {self.cfg.transforms} transforms of {self.cfg.hidden}x"
            f"{self.cfg.hidden} (zuko, {self.cfg.steps} Adam steps)"
        )


def drawn_by(sampler: LatentSampler | None) -> dict[str, Any]:
    """generate's keyword for a fitted sampler; none without one (models that have no samplers need not
    take it)."""
    return {} if sampler is None else {"sampler": sampler}


SAMPLERS: dict[str, type[LatentSampler]] = {"gmm": GaussianMixtureSampler, "maf": FlowSampler}


# -- fitting and storing ----------------------------------------------------------------------------------
def observing(data: AttributeDataset, names: list[str]) -> torch.Tensor:
    """(N,) bool: the training examples that observe every named attribute."""
    keep = torch.ones(data.n_train, dtype=torch.bool)
    for a in data.attributes:
        if a.name in names:
            keep &= a.observed(data.train[a.name])
    return keep


@torch.no_grad()
def training_codes(model, data: AttributeDataset, codes: str, seed: int) -> torch.Tensor:
    """One code per training example: the mean or a draw of q(z|x) ("image-", every example) or of
    q(z | every modality) ("joint-", the examples that observe every attribute)."""
    posterior, how = codes.split("-")
    names = data.image_names + ([a.name for a in data.attributes] if posterior == "joint" else [])
    keep = observing(data, names)
    if not bool(keep.any()):
        raise UserError(
            f"--codes {codes}: no training example observes every attribute (allowed: image-mean or "
            "image-draw, which need only the images)"
        )
    split = {k: v[keep] for k, v in data.train.items()}
    device = next(model.parameters()).device
    out = []
    with own_stream(model, seed):
        for batch in batches(split, 2048, device):
            q = model.posterior({n: batch[n] for n in names})
            out.append((q.sample() if how == "draw" else q.mean).cpu())
    return torch.cat(out).reshape(-1, model.z_dim).float()


@torch.no_grad()
def auto_codes(model, data: AttributeDataset) -> str:
    """joint-mean, unless the model's q(z | every modality) is a mixture or no training example observes
    every attribute: then image-mean."""
    full = observing(data, [a.name for a in data.attributes])
    if not bool(full.any()):
        return "image-mean"
    first = int(full.nonzero()[0])
    device = next(model.parameters()).device
    batch = to_batch(data.train, slice(first, first + 1), device)
    one = {n: v for n, v in batch.items() if n in model.names}
    return "image-mean" if isinstance(model.posterior(one), Mixture) else "joint-mean"


def fit_sampler(model, data: AttributeDataset, cfg: SamplerConfig) -> tuple[LatentSampler, dict[str, float]]:
    """A sampler fitted to the run's training codes, and what the fit scored: mean log-density of the codes
    held out from it (HELD_OUT of them, seeded) beside p(z)'s, nats per code. The sampler's config records
    the codes it was fitted to ("auto" resolved)."""
    cfg.validate()
    model.eval()
    if cfg.codes == "auto":
        cfg = replace(cfg, codes=auto_codes(model, data))
    codes = training_codes(model, data, cfg.codes, cfg.seed)
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(cfg.seed))
    held = max(1, int(HELD_OUT * len(codes))) if len(codes) > 1 else 0
    test, train = codes[order[:held]], codes[order[held:]]
    sampler = SAMPLERS[cfg.kind](cfg, model.z_dim)
    sampler.fit(train)
    sampler.eval()
    scores: dict[str, float] = {"codes": len(codes), "held_out": held}
    if held:
        prior = -0.5 * (test.pow(2).sum(-1) + model.z_dim * math.log(2 * math.pi))
        scores |= {
            "held-out log density": float(sampler.log_prob(test).mean()),
            "held-out log density under p(z)": float(prior.mean()),
        }
    return sampler, scores


def sampler_path(run_dir: Path, kind: str) -> Path:
    return Path(run_dir) / f"sampler-{kind}.pt"


def save_sampler(run_dir: Path, sampler: LatentSampler, scores: dict[str, float]) -> Path:
    path = sampler_path(run_dir, sampler.kind)
    save_torch(
        path,
        {"config": asdict(sampler.cfg), "z_dim": sampler.z_dim, "state": sampler.state_dict(), "fit": scores},
    )
    return path


def load_sampler(run_dir: Path, kind: str, z_dim: int) -> LatentSampler:
    """The run's fitted sampler of this kind, or a UserError naming what to run."""
    path = sampler_path(run_dir, kind)
    if not path.is_file():
        fitted = ", ".join(fitted_kinds(run_dir)) or "none"
        raise UserError(
            f"--sampler {kind}: {run_dir} has no fitted {kind} sampler (fitted: {fitted}; run `jmvae "
            f"fit-sampler {run_dir} --sampler {kind}` first)"
        )
    try:
        stored = load_torch(path)
    except UserError:
        raise UserError(
            f"{path} cannot be read (allowed: the file `jmvae fit-sampler` writes; run `jmvae fit-sampler "
            f"{run_dir} --sampler {kind}` again)"
        ) from None
    try:
        known = {f.name for f in fields(SamplerConfig)}
        cfg = SamplerConfig(**{k: v for k, v in stored["config"].items() if k in known})
        if cfg.kind != kind or int(stored["z_dim"]) != z_dim:
            raise ValueError("kind or z")
        sampler = SAMPLERS[kind](cfg, z_dim)
        sampler.load_state_dict(stored["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(
            f"{path} is not a {kind} sampler of this run's {z_dim}-dimensional z ({type(e).__name__}; "
            f"allowed: the file `jmvae fit-sampler` writes; run `jmvae fit-sampler {run_dir} --sampler "
            f"{kind}` again)"
        ) from None
    return sampler.eval()


def fitted_kinds(run_dir: Path) -> list[str]:
    return [k for k in SAMPLERS if sampler_path(run_dir, k).is_file()]


def load_samplers(run_dir: Path, z_dim: int, kinds: Iterable[str] | None = None) -> dict[str, LatentSampler]:
    """Every sampler fitted in the run (or those named), by kind."""
    return {k: load_sampler(run_dir, k, z_dim) for k in (kinds or fitted_kinds(run_dir))}
