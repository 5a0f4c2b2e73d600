"""The categorical posterior family (`"categorical"`): logits of independent one-hot variables.

Groups `("logits",)`; the distribution is
`distributions.categorical.IndependentOneHotCategorical` (N variables of
`num_categories` classes, Z = N * K).
"""

from tf_lti.distributions import categorical as categorical_lib
from tf_lti.posteriors import base as posterior_base
from tf_lti.saving import serializable

__all__ = ["CategoricalFamily"]


@serializable.serializable
class CategoricalFamily(posterior_base.PosteriorFamily):
  """N independent categoricals of K classes as one-hot units, groups `("logits",)`.

  ```none
  q(z) = prod_n Cat(z_n; softmax(logits_n)),   logits [B, Z] viewed as [B, N, K], Z = N K
  ```

  The result is a `categorical_lib.IndependentOneHotCategorical` (hard one-hot samples,
  not reparameterized: train with a discrete estimator of `tf_lti/objectives/estimators.py`);
  its KL to the uniform prior is analytic. `initial_params` (all zeros) is the
  uniform distribution, the prior of the discrete model.
  """

  name = "categorical"
  param_groups = ("logits",)

  def __init__(self, num_categories=10):
    """Constructs the family.

    Args:
      num_categories: Python int K >= 2, classes per variable.

    Raises:
      ValueError: if `num_categories` is not an int >= 2.
    """
    if isinstance(num_categories, bool) or not isinstance(num_categories, int) or (
        num_categories < 2):
      raise ValueError(f"`num_categories` must be an int >= 2; got {num_categories!r}.")
    self.num_categories = num_categories

  def num_params(self, latent_size):
    """Returns `P = Z`; `num_categories` must divide `latent_size`.

    Raises:
      ValueError: if `latent_size` is not a positive multiple of `num_categories`.
    """
    params = super().num_params(latent_size)
    if latent_size % self.num_categories:
      raise ValueError(f"`num_categories` ({self.num_categories}) must divide `latent_size` "
                       f"(one-hot units); got latent_size={latent_size}.")
    return params

  def _distribution(self, logits):
    return categorical_lib.IndependentOneHotCategorical(logits, self.num_categories)


posterior_base.register_builtin(CategoricalFamily)
