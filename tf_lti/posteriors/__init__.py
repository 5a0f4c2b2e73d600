"""Posterior families: flat parameters `params` `[B, P]` -> a distribution over `z` `[Z]`.

`base` holds the contract and the registry; `gaussian`, `rank_one`,
`categorical`, `flows` (with its `bijectors`) and `hierarchical` (an auxiliary
variable with a reverse model) the families. Importing this
package imports every family module, so all families (and their KLs) are
registered: look families up with `posteriors.get_family`. Every family is
also Keras-serializable (`saving.serializable`), so models holding one save to
`.keras`. May import config, saving and distributions only.
"""

# Imported for their registrations: the families (and their KLs) and the flow factories.
from tf_lti.posteriors import categorical  # pylint: disable=unused-import
from tf_lti.posteriors import flows  # pylint: disable=unused-import
from tf_lti.posteriors import gaussian  # pylint: disable=unused-import
from tf_lti.posteriors import hierarchical  # pylint: disable=unused-import
from tf_lti.posteriors import rank_one  # pylint: disable=unused-import
from tf_lti.posteriors.base import PosteriorFamily
from tf_lti.posteriors.base import get_family
from tf_lti.posteriors.base import register_family

__all__ = ["PosteriorFamily", "get_family", "register_family"]
