"""MoPoE (Sutter, Daunhawer & Vogt 2021, "Generalized Multimodal ELBO").

    q(z|X) = 1/|P(M)| sum_{S in P(M)} q(z|S),   q(z|S) = p(z) prod_{m in S} q(z|m),
    L = 1/|P(M)| sum_{S in P(M)} [ -E_q(z|S)[sum_m lambda_m log p(m|z)] + KL(q(z|S) || p(z)) ],

P(M) the non-empty subsets of the modalities. Given only a subset A of them, q(z|A) is A's own product,
the subset posterior the paper's code conditions on (as MultiVae; both without p(z), which jmvae keeps).
L bounds minus the ELBO of the mixture: the reconstruction is its expectation under the mixture, taken per
component (stratified), and the KL of a mixture is at most the mean of its components' KLs. An example
averages over the subsets it observes, and reconstructs the modalities it has.

With `sample_subsets` each example reconstructs from one subset drawn uniformly among those it observes (the
KLs stay the exact mean): an unbiased estimate of the same L with one decoder pass of the batch instead of
one per subset. M modalities have 2^M - 1 subsets: 7 on the founding experiment (every subset, the
default), 31 on MNIST-A, where decoding every subset's draw made a step 31 conv decodes (the default there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from ..modalities import Modality
from ..posteriors import (
    Gaussian,
    Mixture,
    Posterior,
    kl,
    product_of_experts,
    standard_normal,
    subset_products,
)
from ..subsets import OBSERVED, filled, membership, nonempty_subsets
from .base import Batch, MultimodalVAE, terms

SUBSETS_DECODED = 7  # up to this many subsets, every one's draw is decoded (three modalities)


class MoPoE(MultimodalVAE):
    HELP = {
        "attribute_weight": ("LAMBDA", "weight of every log p(y_i|z)"),
        "sample_subsets": (
            None,
            "each example reconstructed from one subset drawn for it, not from every subset "
            "(default: where there are more than 7 subsets)",
        ),
    }
    PAPER = {"attribute_weight": 1.0}  # Sutter et al. 2021 weigh the modalities alike
    membership: torch.Tensor  # a buffer (S, M): which modalities each subset holds

    def __init__(
        self,
        modalities: Sequence[Modality],
        z_dim: int = 2,
        hidden: int = 512,
        attribute_weight: float = 50.0,
        sample_subsets: bool | None = None,
        **networks,
    ):
        super().__init__(modalities, z_dim, hidden, **networks)
        self.attribute_weight = attribute_weight
        self.weights = {n: 1.0 if n in self.image_names else attribute_weight for n in self.names}
        self.subsets = nonempty_subsets(self.names)
        # None: sample where there are more subsets than the founding experiment's 7
        self.sample_subsets = (
            len(self.subsets) > SUBSETS_DECODED if sample_subsets is None else sample_subsets
        )
        self.register_buffer("membership", membership(self.subsets, self.names), persistent=False)

    def posterior(self, given: Batch) -> Posterior:
        """Every modality given: the joint posterior the objective trains, the mixture of every subset's
        product. A strict subset A: its own product p(z) prod_{m in A} q(z|m); the mixture over A's subsets
        would draw a share of the images from one given modality's expert alone, blind to the others asked
        (both attributes given: 0.52 against 1.00, docs/results-peers.md)."""
        names = self.given_names(given)
        if len(names) < len(self.names):
            return product_of_experts(self.experts(given), prior=True)
        subsets = nonempty_subsets(names)
        experts = cast(list[Gaussian], self.experts(given))  # Gaussians: MoPoE takes no `components`
        q = subset_products(experts, membership(subsets, names).to(self.membership.device))
        return Mixture(
            torch.zeros(q.loc.shape[:-1], device=q.loc.device).movedim(0, -1),
            q.loc.movedim(0, -2),
            q.scale.movedim(0, -2),
        )

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = batch.get(OBSERVED)
        batch = filled(batch)
        experts = [self.encoders[n](batch[n]) for n in self.names]
        q = subset_products(experts, self.membership, True, present)  # (S, B, z_dim)
        kl_prior = kl(q, standard_normal(q.loc))  # (S, B)
        if present is None:  # the subsets each example observes
            valid = torch.ones(kl_prior.shape, dtype=torch.bool, device=kl_prior.device)
        else:
            valid = ~(self.membership.bool()[:, None, :] & ~present).any(
                -1
            )  # (S, B): S holds no unobserved m
        if self.sample_subsets:  # one subset per example, drawn among its valid ones
            pick = (
                torch.multinomial(valid.T.float(), 1).T[..., None].expand(-1, -1, q.loc.shape[-1])
            )  # (1, B, z_dim)
            q = Gaussian(q.loc.gather(0, pick), q.scale.gather(0, pick))
        z = q.rsample()  # (S or 1, B, z_dim)
        log_p = self.log_likelihood(z, batch)  # every modality from each z
        recon = cast(
            torch.Tensor,
            sum(
                self.weights[m] * (lp if present is None else lp * present[:, i])
                for i, (m, lp) in enumerate(log_p.items())
            ),
        )  # (S or 1, B)
        recon = (
            recon[0] if self.sample_subsets else (recon * valid).sum(0) / valid.sum(0)
        )  # (B,): the mean over S
        per_example = -recon + (kl_prior * valid).sum(0) / valid.sum(0)
        named = {f"nll_{m}": -lp.mean(0) for m, lp in log_p.items()} | {"kl_prior": kl_prior.mean(0)}
        return per_example.mean(), terms(**named)

    def describe(self) -> str:
        lam = "" if self.attribute_weight == 1 else f", each log p(y_i|z) weighted {self.attribute_weight:g}"
        if self.sample_subsets:
            lam += "; each example's reconstruction from one S drawn uniformly for it"
        all_ = ",".join(self.names)
        return (
            f"MoPoE:  L = 1/{len(self.subsets)} sum_(S in P({all_})) [-E_q(z|S)[log p({all_}|z)] + "
            "KL(q(z|S) || p(z))],  q(z|S) = p(z) prod_(m in S) q(z|m),  q(z|all) = mixture of q(z|S) over "
            f"the non-empty S, q(z|A) = q(z|S=A) for fewer{lam}"
        )
