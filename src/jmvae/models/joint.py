"""The joint-encoder family (JMVAE, TELBO): a network q(z|x,y) reading every modality at once, beside the
unimodal experts. Its posterior rules (DESIGN.md):
  everything given          -> the joint encoder q(z|x,y)
  attributes only           -> p(z) prod_i q(z|y_i)
  the image only            -> q(z|x)              (it already carries the prior)
  the image and some y_i    -> q(z|x) prod_i q(z|y_i)
"""

from __future__ import annotations

from ..modalities import Categorical
from ..networks import JointEncoder, conv_trunk
from ..posteriors import Posterior, product_of_experts
from .base import Batch, MultimodalVAE


class JointVAE(MultimodalVAE):
    def shared_networks(self) -> None:
        trunk = conv_trunk(self.image, self.hidden)
        classes = [a.size if isinstance(a, Categorical) else None for a in self.attributes]
        self.joint_encoder = JointEncoder(self.image.size, classes, self.z_dim, self.hidden, trunk)

    def posterior(self, given: Batch) -> Posterior:
        names = self.given_names(given)
        if len(names) == len(self.names):
            return self.joint_encoder(given[self.image.name], [given[a] for a in self.attribute_names])
        experts = [self.encoders[n](given[n]) for n in names]
        if self.image.name in given:
            return experts[0] if len(experts) == 1 else product_of_experts(experts, prior=False)
        return product_of_experts(experts, prior=True)
