"""The joint-encoder family (JMVAE, TELBO): a network q(z|x,y) reading every modality at once, beside the
unimodal experts. Its posterior rules (DESIGN.md):
  everything given          -> the joint encoder q(z|x,y)
  attributes only           -> p(z) prod_i q(z|y_i)
  the image only            -> q(z|x)              (it already carries the prior)
  the image and some y_i    -> q(z|x) prod_i q(z|y_i)
With several images x_1..x_k, "the image" above is any non-empty subset of them: q(z|x) = prod_j q(z|x_j).

With `shared_trunk`, each image's conv trunk is one network read by both q(z|x,y) and q(z|x): a training step
reads the images once instead of twice (`posteriors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from ..modalities import Categorical
from ..networks import ConvTrunk, GaussianEncoder, JointEncoder, conv_trunk
from ..posteriors import Posterior, product_of_experts
from .base import Batch, MultimodalVAE

SHARED_TRUNK_HELP = (
    None,
    "one conv trunk per image read by both q(z|x,y) and q(z|x), so a step reads the images once, not twice "
    "(conv image networks only)",
)


class JointVAE(MultimodalVAE):
    def __init__(self, modalities, z_dim: int = 2, hidden: int = 512, components: int = 1, **networks):
        shared = networks.pop("shared_trunk", False)
        super().__init__(modalities, z_dim, hidden, components, **networks)
        self.shared_trunk = shared
        if shared:  # the experts' own trunks (drawn, so a seed's other weights stay) give way to the joint's
            given = sorted(set(networks.get("encoders") or {}) & set(self.image_names))
            if given:
                raise ValueError(
                    f"shared_trunk with an encoder given for image {given[0]} (allowed: the default "
                    "encoders, whose trunk the joint encoder shares)"
                )
            for x, trunk in zip(self.image_names, self.joint_encoder.readers()):
                encoder = self.encoders[x]
                if not (isinstance(trunk, ConvTrunk) and isinstance(encoder, GaussianEncoder)):
                    raise ValueError(
                        f"shared_trunk with image {x}: its networks are the MLP (allowed: conv image "
                        "networks, images of at least 32x32)"
                    )
                encoder.body = trunk

    def posteriors(self, batch: Batch, givens: Sequence[Sequence[str]]) -> list[Posterior]:
        """q(z|given) for each of `givens` (modality names), each image read once where trunks are shared."""
        read: dict[str, torch.Tensor] = {}
        if self.shared_trunk:
            needed = {n for g in givens for n in g}
            readers = zip(self.image_names, self.joint_encoder.readers())
            read = {x: reader(batch[x]) for x, reader in readers if x in needed}
        return [self.posterior({n: batch[n] for n in g}, read) for g in givens]

    def shared_networks(self) -> None:
        first, *more = self.images
        classes = [a.size if isinstance(a, Categorical) else None for a in self.attributes]
        self.joint_encoder = JointEncoder(
            first.size,
            classes,
            self.z_dim,
            self.hidden,
            conv_trunk(first, self.hidden),
            [(m.size, conv_trunk(m, self.hidden)) for m in more],
        )

    def posterior(self, given: Batch, read: dict[str, torch.Tensor] | None = None) -> Posterior:
        """`read`: images already read by their shared trunks (`posteriors`)."""
        names, read = self.given_names(given), read or {}
        if len(names) == len(self.names):
            xs = self.image_names
            return self.joint_encoder(
                [given[x] for x in xs],
                [given[a] for a in self.attribute_names],
                [read[x] for x in xs] if all(x in read for x in xs) else (),
            )
        experts = [
            cast(GaussianEncoder, self.encoders[n]).from_body(read[n])
            if n in read
            else self.encoders[n](given[n])
            for n in names
        ]
        if any(x in given for x in self.image_names):
            return experts[0] if len(experts) == 1 else product_of_experts(experts, prior=False)
        return product_of_experts(experts, prior=True)
