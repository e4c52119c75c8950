"""JMVAE-kl (Suzuki, Nakayama & Matsuo 2016, "Joint Multimodal Learning with Deep Generative Models").

    L = -E_q(z|x,y)[log p(x|z) + lambda log p(y|z)] + beta KL(q(z|x,y) || p(z))
        + alpha * [ KL(q(z|x,y) || q(z|x)) + sum_S KL(q(z|x,y) || q(z|y_S)) ]
        - gamma_y sum_S E_q(z|y_S)[lambda log p(y_S|z)] - gamma_x E_q(z|y)[log p(x|z)]
        - gamma_p E_p(z)[sum_j s_j(z) (log p(x_j|z) + lambda log p(y_j|z))]

with q(z|y_S) = p(z) prod_{i in S} q(z|y_i). The paper's objective is lambda = beta = 1, S = all attributes
only and gamma_y = gamma_x = gamma_p = 0 (`--paper`); alpha = 0 is JMVAE-zero (the unimodal encoders are then
untrained). The options are the knobs that make every attribute query answer right (docs/results-queries.md):
- lambda (attribute_weight) weighs the attributes' log-likelihood (the TELBO paper's best runs use 50);
- beta < 1 lets q(z|x,y) keep more of each image (a beta-VAE's prior term), while the alpha terms still
  pull q(z|x) and q(z|y_S) onto it;
- every_subset: a KL term for every non-empty attribute subset S, so each single-attribute expert is
  trained on its own and not only inside the product;
- gamma_y (attribute_recon): the attributes reconstructed from their own posterior q(z|y_S), which keeps
  q(z|y_S) where p(y_S|z) says y_S (the attribute half of TELBO's ELBO(y));
- gamma_x (image_recon): the image reconstructed from q(z|y), which teaches p(x|z) to draw the class
  wherever q(z|y) puts its mass (the cross-modal term of MMVAE/MoPoE);
- gamma_p (prior_recon): at draws of the prior, both decoders learn what the nearest codes are, s_j(z) =
  q(z|x_j,y_j) / sum_k q(z|x_k,y_k) over the batch: between the clusters p(z) still puts mass (where no
  query goes, but joint generation does), p(x|z) and p(y|z) then follow one assignment instead of each
  extrapolating its own boundary, so an image drawn from p(z) shows the attributes p(y|z) gives it;
- components > 1: each attribute expert a mixture of Gaussians (KLs to it by a one-sample estimate);
- recon_draws = n > 0: the gamma terms' expectations estimated from n draws a step (of p(z), and of q(z|y_S)
  for the batch's first n examples, whose images are still matched against the whole batch) instead of one
  per example: each of those draws is an image decoder pass, so they were half of a default step.

An example whose attributes are not all observed has no q(z|x,y); it trains the image's ELBO with the
attributes it has: -E_q(z|x)[log p(x|z) + lambda sum_{observed i} log p(y_i|z)] + KL(q(z|x) || p(z));
its batch goes without the prior term.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from ..modalities import Modality
from ..posteriors import Gaussian, divergences, first_rows, kl, standard_normal, stratified_rsample
from ..subsets import OBSERVED, filled, observed
from .base import Batch, terms
from .joint import SHARED_TRUNK_HELP, JointVAE

IMAGE_TARGETS = ("matched", "paired")


@torch.no_grad()
def code_weights(q: Gaussian, z: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """q(z_i|x_j,y_j) / sum_k q(z_i|x_k,y_k) for every draw z_i (..., B_i, z_dim) over the batch's examples j
    (..., B_i, B_j), restricted to the `allowed` (B_i, B_j) pairs: how likely the joint encoder is to have put
    each example at z_i. A weight, not a path for gradients (the targets' encoder is not trained by it)."""
    log_q = q.log_prob(z.unsqueeze(-2))
    return (log_q if allowed is None else log_q.masked_fill(~allowed, float("-inf"))).softmax(-1)


class JMVAE(JointVAE):
    # each option's flag help (metavar, text): the CLI's flags are generated from these and the defaults below
    HELP = {
        "alpha": ("A", "weight of the KL terms to the unimodal posteriors; 0 is JMVAE-zero"),
        "attribute_weight": ("LAMBDA", "weight of every log p(y_i|z)"),
        "beta": ("B", "beta, the weight of the KL terms to p(z) (MVTCAE and MMVAE+: of every KL term)"),
        "every_subset": (
            None,
            "a KL term for every non-empty attribute subset, not only all attributes together",
        ),
        "attribute_recon": ("GAMMA_Y", "weight of the attributes reconstructed from q(z|y_S)"),
        "image_recon": ("GAMMA_X", "weight of the image reconstructed from q(z|y)"),
        "image_target": (
            None,
            "the image that term scores at z ~ q(z|y): the batch's images of the class weighted "
            "by q(z|x_j,y) (matched), or the example's own (paired)",
        ),
        "prior_recon": (
            "GAMMA_P",
            "weight of both decoders taught the nearest codes at draws of p(z), so that images "
            "drawn from p(z) show the attributes p(y|z) gives them",
        ),
        "recon_draws": (
            "N",
            "draws of q(z|y) and of p(z) a step for the image-recon and prior-recon terms (0: one "
            "per example)",
        ),
        "components": ("K", "Gaussians in each attribute expert"),
        "shared_trunk": SHARED_TRUNK_HELP,
    }
    CHOICES = {"image_target": IMAGE_TARGETS}
    PAPER = {
        "alpha": 1.0,
        "attribute_weight": 1.0,
        "beta": 1.0,
        "every_subset": False,
        "attribute_recon": 0.0,
        "image_recon": 0.0,
        "prior_recon": 0.0,
        "components": 1,
    }  # JMVAE-kl as Suzuki et al. 2016 write it

    def __init__(
        self,
        modalities: Sequence[Modality],
        z_dim: int = 2,
        hidden: int = 512,
        alpha: float = 1.0,
        attribute_weight: float = 1.0,
        beta: float = 1.0,
        every_subset: bool = True,
        attribute_recon: float = 0.0,
        image_recon: float = 1.0,
        image_target: str = "matched",
        prior_recon: float = 0.3,
        recon_draws: int = 0,
        components: int = 1,
        shared_trunk: bool = False,
        **networks,
    ):
        super().__init__(modalities, z_dim, hidden, components, shared_trunk=shared_trunk, **networks)
        self.alpha, self.attribute_weight, self.beta = alpha, attribute_weight, beta
        if image_target not in IMAGE_TARGETS:
            raise ValueError(f"image_target {image_target} (allowed: {', '.join(IMAGE_TARGETS)})")
        self.attribute_recon, self.image_recon, self.image_target = attribute_recon, image_recon, image_target
        self.prior_recon, self.recon_draws = prior_recon, recon_draws
        self.subsets = self.attribute_subsets(every_subset)  # the S of the sums above

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labelled = observed(batch, self.names, self.attribute_names)  # None: every example is
        batch = filled(batch)
        xs = self.image_names
        # q(z|x,y) (the joint encoder's), q(z|x) (the image experts' product) and q(z|y_S) for each S
        q, q_x, *q_y = self.posteriors(batch, [self.names, xs, *self.subsets])
        q, q_x = cast(Gaussian, q), cast(Gaussian, q_x)
        z = q.rsample()
        draws = min(self.recon_draws or len(z), len(z))  # draws for the gamma terms
        # the prior term's draws z' ~ p(z) ride in the same decoder pass (one call per decoder, not two)
        prior = bool(self.prior_recon) and (
            labelled is None or bool(labelled.all())
        )  # see prior_reconstruction
        z_p = torch.randn(draws, z.shape[-1], dtype=z.dtype, device=z.device) if prior else z[:0]
        logits = self.logits(torch.cat([z, z_p]))
        log_p = {n: self.modalities[n].log_likelihood(l[: len(z)], batch[n]) for n, l in logits.items()}
        # KL(q(z|x,y) || p(z)), KL(q(z|x,y) || q(z|x)), KL(q(z|x,y) || q(z|y_S)) for each S, evaluated
        # together
        kl_prior, kl_x, *kl_y = divergences(q, z, [standard_normal(q.loc), q_x, *q_y])
        recon = self.images_log_likelihood(log_p) + self.attribute_weight * sum(
            log_p[a.name] for a in self.attributes
        )
        regulariser = self.beta * kl_prior + self.alpha * (kl_x + sum(kl_y))
        per_example = -recon + (regulariser if self.kl_weight == 1 else self.kl_weight * regulariser)
        named = {f"nll_{n}": -v for n, v in log_p.items()} | {"kl_prior": kl_prior, "kl_x": kl_x}
        named |= {self._kl_name(s): v for s, v in zip(self.subsets, kl_y)}
        drawn: dict[str, torch.Tensor] = {}  # the gamma terms, one value per draw (the first examples')
        if self.attribute_recon or self.image_recon:
            drawn |= self.cross_reconstruction(batch, q, q_y, labelled, draws)
        if prior:
            drawn |= self.prior_reconstruction(batch, q, z_p, {n: l[len(z) :] for n, l in logits.items()})
        elif self.prior_recon:
            drawn |= {f"nll_{n}|p(z)": z.new_zeros(draws) for n in self.names}
        if labelled is not None:
            image_elbo = self.image_elbo(batch, q_x, ~labelled)
            per_example = torch.where(labelled, per_example, image_elbo)
            named = {k: v * labelled for k, v in named.items()} | {
                "elbo_x|unlabelled": image_elbo * ~labelled
            }
            drawn = {k: v * labelled[:draws] for k, v in drawn.items()}
        if not drawn:
            return per_example.mean(), terms(**named)
        # each gamma term's mean over its draws estimates its mean over the batch (draws = B: the same sum)
        drawn = {k: -v for k, v in drawn.items()}
        loss = per_example.mean() + torch.stack(list(drawn.values())).sum(0).mean()
        return loss, terms(**named) | terms(**drawn)

    def image_elbo(self, batch: Batch, q_x: Gaussian, rows: torch.Tensor) -> torch.Tensor:
        """-E_q(z|x)[log p(x|z) + lambda sum_{observed i} log p(y_i|z)] + beta KL(q(z|x) || p(z)), per
        example; decoded for `rows` only (the others are 0). Every row's z is drawn, so the random stream is
        the same whichever rows need it."""
        z = q_x.rsample()
        idx = rows.nonzero().squeeze(-1)
        part = {k: v[idx] for k, v in batch.items()}
        q_part = Gaussian(q_x.loc[idx], q_x.scale[idx])
        log_p = self.log_likelihood(z[idx], part)
        seen = part[OBSERVED]
        recon = self.images_log_likelihood(log_p) + self.attribute_weight * sum(
            log_p[a] * seen[:, self.names.index(a)] for a in self.attribute_names
        )
        elbo = -recon + self.kl_weight * self.beta * kl(q_part, standard_normal(q_part.loc))
        return z.new_zeros(len(z)).index_put((idx,), elbo)

    def cross_reconstruction(
        self,
        batch: Batch,
        q: Gaussian,
        q_y: list,
        labelled: torch.Tensor | None = None,
        draws: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """gamma_y E_q(z|y_S)[lambda log p(y_S|z)] for each S and gamma_x E_q(z|y)[log p(x|z)], per example
        (for the first `draws` examples only, if given), named like the nll terms they mirror: "nll_x|y",
        "nll_position|y", "nll_position|position", ...

        The image term scores, at a draw z of q(z|y), either the example's own image ("paired", as MMVAE
        and MoPoE do) or the batch's images with the same attributes, each weighted by how likely the joint
        encoder is to put it at z: r_j(z) = q(z|x_j,y) / sum_k q(z|x_k,y) ("matched"). Paired targets pull
        p(x|z) toward the class's average image wherever q(z|y) reaches, blurring what it draws for the
        images that code there; matched targets ask p(x|z) for what the codes at z already are, so the term
        only teaches it where no code lies (between the clusters, where q(z|y)'s tails fall).
        """
        out: dict[str, torch.Tensor] = {}
        every = tuple(a.name for a in self.attributes)
        rows = {k: v[:draws] for k, v in batch.items()}
        for s, q_s in zip(self.subsets, q_y):
            weights = (
                {a: self.attribute_recon * self.attribute_weight for a in s} if self.attribute_recon else {}
            )
            if self.image_recon and s == every:
                weights |= {x: self.image_recon for x in self.image_names}
            if not weights:
                continue
            z_s, w = stratified_rsample(first_rows(q_s, draws))  # (K, n, z_dim): one draw per component
            attributes = [n for n in weights if n not in self.image_names]
            log_p = self.log_likelihood(z_s, rows, attributes) if attributes else {}
            for x in self.image_names:
                if x in weights:
                    log_p[x] = self._image_from_attributes(x, z_s, batch, q, labelled)
            given = "y" if s == every else ",".join(s)
            for name, lp in log_p.items():
                expected = lp[0] if w is None else (w * lp).sum(0)
                out[f"nll_{name}|{given}"] = weights[name] * expected
        return out

    def prior_reconstruction(
        self, batch: Batch, q: Gaussian, z: torch.Tensor, logits: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """gamma_p E_p(z)[sum_j s_j(z) log p(m_j|z)] for the image and (weighted by lambda) each attribute,
        from draws z (n, z_dim) of p(z) and their decoder logits, s_j(z) = q(z|x_j,y_j) /
        sum_k q(z|x_k,y_k) over the batch (the soft nearest code); per draw, named "nll_x|p(z)",
        "nll_position|p(z)", ...

        Only fully labelled batches have the term (others log it as 0, so every batch has the same terms):
        with 1% of the labels, a batch's one or two labelled codes stood for every cluster, so every draw was
        taught one random image (coverage 0.984 -> 0.941).
        """
        s = code_weights(q, z)  # (B, B): s_j(z_i)
        out: dict[str, torch.Tensor] = {}
        for name, l in logits.items():
            pairs = self.modalities[name].log_likelihood_pairs(l, batch[name])
            weight = self.prior_recon * (1.0 if name in self.image_names else self.attribute_weight)
            out[f"nll_{name}|p(z)"] = weight * (s * pairs).sum(-1)
        return out

    def _image_from_attributes(
        self, x: str, z: torch.Tensor, batch: Batch, q: Gaussian, labelled: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(target image x | z) for draws z (K, n, z_dim) of q(z|y) of the batch's first n examples: the
        example's own image, or the matched mixture over the batch's labelled images with the same attributes
        (see cross_reconstruction). Each example matches itself, so no row is empty (an unlabelled row's value
        is not used)."""
        image, n = self.modalities[x], z.shape[-2]
        logits = self.decoders[x](z)
        if self.image_target == "paired":
            return image.log_likelihood(logits, batch[x][:n])
        pairs = image.log_likelihood_pairs(logits, batch[x])  # (K, n, B)
        same = torch.stack([batch[a.name][:n].unsqueeze(1) == batch[a.name] for a in self.attributes]).all(0)
        if labelled is not None:
            same = same & labelled | torch.eye(*same.shape, dtype=torch.bool, device=same.device)
        return (code_weights(q, z, same) * pairs).sum(-1)

    def _kl_name(self, s: tuple[str, ...]) -> str:
        return "kl_y" if len(s) == len(self.attributes) else f"kl_{','.join(s)}"

    def describe(self) -> str:
        x, y = self._x(), self._y()
        lam = "" if self.attribute_weight == 1 else f"{self.attribute_weight:g} "
        beta = "" if self.beta == 1 else f"{self.beta:g} "
        subsets = [f"q(z|{','.join(s)})" for s in self.subsets]
        kls = " + ".join(f"KL(q(z|{x},{y}) || {t})" for t in [f"q(z|{x})", *subsets])
        text = (
            f"JMVAE (alpha={self.alpha:g}):  L = -E_q(z|{x},{y})[log p({x}|z) + {lam}log p({y}|z)]"
            f" + {beta}KL(q(z|{x},{y}) || p(z)) + {self.alpha:g} * [{kls}]"
        )
        every = tuple(a.name for a in self.attributes)
        if self.attribute_recon:
            text += "".join(
                f" - {self.attribute_recon:g} E_q(z|{','.join(s)})[{lam}log p({','.join(s)}|z)]"
                for s in self.subsets
            )
        if self.image_recon and self.image_target == "paired":
            text += f" - {self.image_recon:g} E_q(z|{y})[log p({x}|z)]"
        elif self.image_recon:
            text += (
                f" - {self.image_recon:g} E_q(z|{y})[sum_j r_j(z) log p({x}_j|z)], r_j(z) = q(z|{x}_j,{y}) / "
                f"sum_k q(z|{x}_k,{y}) over the batch's images with attributes {y}"
            )
        if self.prior_recon:
            y_j, y_k = (",".join(f"{a.name}_{i}" for a in self.attributes) for i in "jk")
            text += (
                f" - {self.prior_recon:g} E_p(z)[sum_j s_j(z) (log p({x}_j|z) + {lam}log p({y_j}|z))], "
                f"s_j(z) = q(z|{x}_j,{y_j}) / sum_k q(z|{x}_k,{y_k}) over the batch"
            )
        if self.recon_draws and (self.attribute_recon or self.image_recon or self.prior_recon):
            text += f" (the gamma terms averaged over {self.recon_draws} draws a step)"
        text += f",  q(z|{y}) = p(z) " + " ".join(f"q(z|{a.name})" for a in self.attributes)
        if len(self.subsets) > 1:
            text += ", and likewise for each subset"
        if self.components > 1:
            text += f";  each q(z|{every[0]}=v), ... a mixture of {self.components} Gaussians"
        return text
