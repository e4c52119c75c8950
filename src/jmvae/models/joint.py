"""The joint-encoder family (JMVAE, TELBO): a network q(z|x,y) reading every modality at once, beside the
unimodal experts. Its posterior rules (DESIGN.md):
  everything given          -> the joint encoder q(z|x,y)
  attributes only           -> p(z) prod_i q(z|y_i)
  the image only            -> q(z|x)              (it already carries the prior)
  the image and some y_i    -> q(z|x) prod_i q(z|y_i)
With several images x_1..x_k, "the image" above is any non-empty subset of them: q(z|x) = prod_j q(z|x_j).
"""

from __future__ import annotations

from ..modalities import Categorical
from ..networks import JointEncoder, conv_trunk
from ..posteriors import Posterior, product_of_experts
from .base import Batch, MultimodalVAE


class JointVAE(MultimodalVAE):
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

    def posterior(self, given: Batch) -> Posterior:
        names = self.given_names(given)
        if len(names) == len(self.names):
            return self.joint_encoder(
                [given[x] for x in self.image_names], [given[a] for a in self.attribute_names]
            )
        experts = [self.encoders[n](given[n]) for n in names]
        if any(x in given for x in self.image_names):
            return experts[0] if len(experts) == 1 else product_of_experts(experts, prior=False)
        return product_of_experts(experts, prior=True)
