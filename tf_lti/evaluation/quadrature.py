"""Gauss-Hermite quadrature of the ELBO of a 2-D latent, and its landscape over the means.

The ELBO landscape of one example is ELBO(mu; log sigma^2) over a grid of
means mu = (mu_1, mu_2) with the log-variance held fixed. Its expectation over
q is a tensor-product Gauss-Hermite quadrature, so the landscape is a
deterministic, smooth function of mu, and its grid optimum, the methods'
estimates and the optimum's value are comparable exactly (Kim et al. 2018,
figure 1; `experiments.oracle`).
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti import posteriors
from tf_lti.config import validation

tfd = tfp.distributions

__all__ = ["elbo_landscape", "gauss_hermite", "grid_optimum", "landscape_axis", "quadrature_elbo"]


def gauss_hermite(num_nodes, latent_size):
  """Tensor-product Gauss-Hermite rule for E_{N(0, I_Z)}[f(eps)].

  ```none
  E[f(eps)] ~= sum_m weights[m] f(nodes[m])        exact for polynomials of degree < 2n per axis
  ```

  Args:
    num_nodes: n nodes per axis.
    latent_size: Z.

  Returns:
    nodes: float64 `np.ndarray` `[n**Z, Z]`.
    weights: float64 `np.ndarray` `[n**Z]`, summing to 1.
  """
  validation.check_int("num_nodes", num_nodes)
  validation.check_int("latent_size", latent_size)
  points, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
  weights = weights / math.sqrt(2.0 * math.pi)
  nodes = np.stack(np.meshgrid(*[points] * latent_size, indexing="ij"), -1).reshape(-1, latent_size)
  grid_weights = np.prod(np.stack(np.meshgrid(*[weights] * latent_size, indexing="ij"), -1),
                         axis=-1).reshape(-1)
  return nodes, grid_weights


def quadrature_elbo(x, decoder, loc, log_variance, *, num_nodes=8):
  """ELBO of one example at many posterior means with a shared log-variance.

  ```none
  ELBO(mu) = sum_m w_m log p(x | mu + sigma * eps_m) - KL(N(mu, sigma^2) || N(0, I))
  ```

  with the Gauss-Hermite nodes eps_m and weights w_m (`gauss_hermite`): a
  deterministic, smooth function of mu.

  Args:
    x: int32 `[1, T]`, one example.
    decoder: the generative model (Z-dimensional latent).
    loc: float `[G, Z]` posterior means.
    log_variance: float `[Z]` posterior log-variance, shared by every mean.
    num_nodes: Gauss-Hermite nodes per axis. Default value: 8.

  Returns:
    `np.ndarray` `[G]`.
  """
  family = posteriors.get_family("diagonal")
  latent_size = decoder.latent_size
  loc = tf.constant(loc, tf.float32)
  log_variance = tf.broadcast_to(tf.constant(log_variance, tf.float32), tf.shape(loc))
  nodes, weights = gauss_hermite(num_nodes, latent_size)
  scale = tf.exp(0.5 * log_variance)
  z = loc[None] + scale[None] * tf.constant(nodes, tf.float32)[:, None, :]  # [M, G, Z]
  x = tf.repeat(tf.constant(x), tf.shape(loc)[0], axis=0)
  log_likelihood, _ = decoder.log_joint_parts(x, z)  # [M, G]
  expected = tf.tensordot(tf.constant(weights, tf.float32), log_likelihood, axes=1)
  params = family.join({"loc": loc, "log_variance": log_variance})
  kl = tfd.kl_divergence(family.distribution(params), decoder.prior())
  return (expected - kl).numpy()


def landscape_axis(points, *, margin=1.0, low_margin=None, num_points=81):
  """Grid coordinates `[A]`, shared by mu_1 and mu_2, covering every point.

  Args:
    points: `[N, 2]` means to show.
    margin: room beyond the largest coordinate. Default value: 1.
    low_margin: room below the smallest coordinate (e.g. for a legend in the
      lower left corner); `None` means `margin`.
    num_points: A >= 2.

  Returns:
    `np.ndarray` `[A]` from min(points) - low_margin to max(points) + margin.
  """
  validation.check_int("num_points", num_points, minimum=2)
  low_margin = margin if low_margin is None else low_margin
  if not (margin >= 0 and low_margin >= 0):
    raise ValueError(f"`margin` and `low_margin` must be >= 0; got {margin!r}, {low_margin!r}.")
  points = np.asarray(points, np.float64)
  return np.linspace(points.min() - low_margin, points.max() + margin, num_points)


def elbo_landscape(x, decoder, axis, log_variance, *, num_nodes=8, chunk_size=128):
  """ELBO of one example over the grid `axis` x `axis` of means (fixed log-variance).

  Args:
    x: int32 `[1, T]`.
    decoder: a generative model with a 2-D latent.
    axis: `[A]` grid coordinates.
    log_variance: `[2]`, the posterior log-variance at every grid point.
    num_nodes: Gauss-Hermite nodes per axis. Default value: 8.
    chunk_size: grid points per decoder call. Default value: 128.

  Returns:
    values: `np.ndarray` `[A, A]`, `values[i, j]` at (mu_1 = axis[j], mu_2 = axis[i])
      (the layout of `reporting.plots.save_landscape`).

  Raises:
    ValueError: for a latent that is not 2-D.
  """
  if decoder.latent_size != 2:
    raise ValueError(f"An ELBO landscape needs a 2-D latent; `decoder` has latent_size="
                     f"{decoder.latent_size}.")
  validation.check_int("chunk_size", chunk_size)
  grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
  values = np.concatenate([
      quadrature_elbo(x, decoder, grid[start:start + chunk_size], log_variance,
                      num_nodes=num_nodes)
      for start in range(0, len(grid), chunk_size)])
  return values.reshape(len(axis), len(axis))


def grid_optimum(values, axis):
  """The best grid point: (mu* `[2]` = (mu_1, mu_2), its value), for `elbo_landscape`'s layout."""
  row, column = np.unravel_index(np.argmax(values), values.shape)
  return np.array([axis[column], axis[row]]), float(values[row, column])
