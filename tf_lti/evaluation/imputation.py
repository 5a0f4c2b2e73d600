"""Missing-data imputation by iterated inference and resampling (Rezende et al. 2014, 5.4).

```none
mask m [B, D]: True where a pixel is missing (x_obs = x[~m], x_miss = x[m])
x_0 = x with x_miss <- 0.5 (fill="half") or noise (fill="noise")
for t = 1 ... T:
  lambda_t = infer(x_{t-1})                          (model.infer: any inference procedure)
  z_t      ~ q(z | lambda_t)
  x_t      = x_obs where observed, x_miss ~ p(x | z_t) where missing
```

The chain simulates a Markov chain whose stationary distribution approaches
p(x_miss | x_obs) when q(z | x) is close to p(z | x) (Rezende et al.,
appendix F). Observed pixels never change. Missingness types (Little & Rubin):
missing at random (`random_mask`, a fraction of the pixels, e.g. 0.6 or 0.8)
and not missing at random (`block_mask`, a square block at a random or central
position).

Errors (`imputation_errors`), pooled over every missing pixel of every example,
at each t = 0 ... T (t = 0 is the initial fill):

```none
mse_t               = mean_{missing} (E[x | z_t] - x)^2          (E[x | z_0] := the fill)
error_rate_t        = mean_{missing} [ (E[x | z_t] > 1/2) != x ]  (binary data only: the
                                                                  most probable pixel is wrong)
sample_error_rate_t = mean_{missing} [ x_t != x ]                 (binary data only: the sample)
running_mean_mse_t  = mean_{missing} (mean_{s=1..t} E[x | z_s] - x)^2   (chain average)
```

Only generative models with a `factorized_likelihood` (`mean(z)` and
`conditional_distribution(z)`, as `models.dlgm.DLGM`) are supported; draws of
a likelihood other than Bernoulli are clipped to the data range [0, 1].
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tf_lti.config import choices

__all__ = [
    "ImputationResult", "block_mask", "check_decoder", "imputation_errors", "impute",
    "initial_fill", "make_mask", "pixel_mean_baseline", "random_mask",
]


def _check_positive(name, value):
  if value < 1:
    raise ValueError(f"`{name}` must be >= 1; got {value}.")


def _is_binary(x):
  return bool(np.all((x == 0.0) | (x == 1.0)))


def random_mask(num_examples, event_size, fraction, *, seed):
  """Missing at random: exactly round(fraction * D) missing pixels per example.

  Args:
    num_examples: N >= 1.
    event_size: D >= 1.
    fraction: the missing fraction, in (0, 1] (Rezende et al.: 0.6, 0.8).
    seed: Python int; example i's pixels come from a generator seeded by (seed, i).

  Returns:
    mask: bool `np.ndarray` `[N, D]`, True where missing.
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"`missing_fraction` must be in (0, 1]; got {fraction}.")
  _check_positive("num_examples", num_examples)
  _check_positive("event_size", event_size)
  count = max(1, int(round(fraction * event_size)))
  mask = np.zeros([num_examples, event_size], bool)
  for i in range(num_examples):
    mask[i, np.random.default_rng([seed, i]).choice(event_size, count, replace=False)] = True
  return mask


def block_mask(num_examples, image_shape, block_size, *, position="random", seed=0):
  """Not missing at random: a `block_size` x `block_size` square of every image is missing.

  Args:
    num_examples: N >= 1.
    image_shape: (H, W) or (H, W, C) of the row-major flattened images (all
      channels of a missing pixel are missing).
    block_size: s, in [1, min(H, W)].
    position: `"random"` (top-left corner uniform over the H - s + 1 by
      W - s + 1 positions, per example) or `"center"` (at ((H - s) // 2, (W - s) // 2)).
    seed: Python int; example i's corner comes from a generator seeded by (seed, i).

  Returns:
    mask: bool `np.ndarray` `[N, prod(image_shape)]`, True where missing.
  """
  if len(image_shape) not in (2, 3):
    raise ValueError(f"`image_shape` must be (H, W) or (H, W, C); got {tuple(image_shape)}.")
  _check_positive("num_examples", num_examples)
  height, width = image_shape[:2]
  if not 1 <= block_size <= min(height, width):
    raise ValueError(f"`block_size` must be in [1, {min(height, width)}] for images of shape "
                     f"{tuple(image_shape)}; got {block_size}.")
  if position not in choices.BLOCK_POSITIONS:
    raise ValueError(f"`block_position` must be one of {choices.BLOCK_POSITIONS}; "
                     f"got {position!r}.")
  mask = np.zeros([num_examples, *image_shape], bool)
  for i in range(num_examples):
    if position == "center":
      top, left = (height - block_size) // 2, (width - block_size) // 2
    else:
      rng = np.random.default_rng([seed, i])
      top, left = rng.integers(0, height - block_size + 1), rng.integers(0, width - block_size + 1)
    mask[i, top:top + block_size, left:left + block_size] = True
  return mask.reshape(num_examples, -1)


def make_mask(missing, num_examples, image_shape, *, fraction=0.6, block_size=None,
              position="random", seed=0):
  """`random_mask` or `block_mask` by name (`missing` in `MISSING_TYPES`).

  `block_size=None` takes half the shorter image side.

  Returns:
    mask: bool `np.ndarray` `[N, D]`, True where missing.
  """
  if missing == "random":
    return random_mask(num_examples, int(np.prod(image_shape)), fraction, seed=seed)
  if missing == "block":
    if block_size is None:
      block_size = max(1, min(image_shape[:2]) // 2)
    return block_mask(num_examples, image_shape, block_size, position=position, seed=seed)
  raise ValueError(f"`missing` must be one of {choices.MISSING_TYPES}; got {missing!r}.")


def initial_fill(x, mask, *, fill="half", seed, binary=False):
  """x with its missing pixels replaced by 1/2 or by noise.

  Args:
    x: float `Tensor` `[B, D]` in [0, 1].
    mask: bool `[B, D]`, True where missing.
    fill: `"half"` (0.5) or `"noise"` (U[0, 1), or Bernoulli(1/2) pixels for `binary` data).
    seed: stateless seed `[2]` (used by `"noise"`).
    binary: the data are binary. Default value: `False`.

  Returns:
    x_0: `[B, D]`, equal to `x` where observed.
  """
  x = tf.convert_to_tensor(x)
  if fill == "half":
    values = tf.fill(tf.shape(x), tf.constant(0.5, x.dtype))
  elif fill == "noise":
    values = tf.random.stateless_uniform(tf.shape(x), seed, dtype=x.dtype)
    if binary:
      values = tf.cast(values < 0.5, x.dtype)
  else:
    raise ValueError(f"`fill` must be one of {choices.IMPUTATION_FILLS}; got {fill!r}.")
  return tf.where(mask, values, x)


@dataclasses.dataclass
class ImputationResult:
  """The imputation chain.

  Attributes:
    samples: `np.ndarray` `[T + 1, B, D]`: x_0 (the fill), x_1 ... x_T, observed pixels
      equal to the data.
    means: `np.ndarray` `[T + 1, B, D]`: the fill, then the data with the missing pixels
      replaced by E[x | z_t].
  """
  samples: np.ndarray
  means: np.ndarray


def check_decoder(generative):
  """Raises `ValueError` unless `generative` (a `models.base.GenerativeModel`) has a
  `factorized_likelihood`."""
  if not generative.factorized_likelihood:
    raise ValueError(f"Imputation needs a decoder with a factorized likelihood "
                     f"(`factorized_likelihood`); got a {type(generative).__name__} decoder.")


def impute(model, x, mask, *, num_iterations, seed, fill="half"):
  """Runs the imputation chain (module docstring) for `num_iterations` steps.

  Args:
    model: a `vae.VAE` (any inference procedure: `model.infer` gives lambda).
    x: float `np.ndarray` or `Tensor` `[B, D]`, the complete data in [0, 1].
    mask: bool `[B, D]`, True where missing.
    num_iterations: T >= 1.
    seed: stateless seed, int `Tensor` `[2]`; the fill and each step t draw from seeds
      split from it.
    fill: one of `IMPUTATION_FILLS`. Default value: `"half"`.

  Returns:
    An `ImputationResult`.
  """
  check_decoder(model.generative)
  if num_iterations < 1:
    raise ValueError(f"`num_iterations` must be >= 1; got {num_iterations}.")
  x = tf.convert_to_tensor(x, tf.float32)
  mask = tf.convert_to_tensor(mask, tf.bool)
  if mask.shape != x.shape:
    raise ValueError(f"`mask` must have the shape of `x` {x.shape}; got {mask.shape}.")
  generative = model.generative
  binary = _is_binary(x.numpy())
  seeds = tf.random.experimental.stateless_split(seed, num_iterations + 1)
  clip = generative.likelihood != "bernoulli"

  @tf.function
  def step(x_current, step_seed):
    infer_seed, z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, 3))
    params = model.infer(x_current, seed=infer_seed, training=False).params
    z = model.family.distribution(params).sample(seed=z_seed)  # [B, Z]
    mean = generative.mean(z)
    sample = tf.cast(generative.conditional_distribution(z).sample(seed=x_seed), x.dtype)
    if clip:
      sample = tf.clip_by_value(sample, 0.0, 1.0)
    return tf.where(mask, sample, x), tf.where(mask, mean, x)

  current = initial_fill(x, mask, fill=fill, seed=seeds[0], binary=binary)
  samples, means = [current.numpy()], [current.numpy()]
  for t in range(1, num_iterations + 1):
    current, mean = step(current, seeds[t])
    samples.append(current.numpy())
    means.append(mean.numpy())
  return ImputationResult(samples=np.stack(samples), means=np.stack(means))


def imputation_errors(x, mask, result):
  """Imputation errors per iteration t = 0 ... T (module docstring), pooled over missing pixels.

  Args:
    x: `np.ndarray` `[B, D]`, the complete data.
    mask: bool `[B, D]`, True where missing (at least one pixel).
    result: an `ImputationResult`.

  Returns:
    Dict of Python float lists of length T + 1: `mse`, `running_mean_mse` (t = 0: the
    fill's), and for binary data `error_rate` and `sample_error_rate`; plus
    `num_missing` (int) and `missing_fraction`.
  """
  x, mask = np.asarray(x, np.float64), np.asarray(mask, bool)
  num_missing = int(mask.sum())
  if not num_missing:
    raise ValueError("`mask` marks no pixel as missing: nothing to impute.")
  means = np.asarray(result.means, np.float64)
  samples = np.asarray(result.samples, np.float64)

  def pooled(values):  # [T + 1, B, D] -> [T + 1]
    return (np.where(mask, values, 0.0).sum(axis=(1, 2)) / num_missing).tolist()

  running = np.cumsum(means[1:], axis=0) / np.arange(1, len(means))[:, None, None]
  running = np.concatenate([means[:1], running])
  errors = {"mse": pooled((means - x) ** 2), "running_mean_mse": pooled((running - x) ** 2),
            "num_missing": num_missing, "missing_fraction": num_missing / mask.size}
  if _is_binary(x):
    errors["error_rate"] = pooled(((means > 0.5) != (x > 0.5)).astype(np.float64))
    errors["sample_error_rate"] = pooled((samples != x).astype(np.float64))
  return errors


def pixel_mean_baseline(x, mask, pixel_means):
  """The errors of filling every missing pixel with its training-set mean.

  Args:
    x: `np.ndarray` `[B, D]`; mask: bool `[B, D]`; pixel_means: `[D]`.

  Returns:
    Dict: `mse` and, for binary data, `error_rate` (Python floats).
  """
  x, mask = np.asarray(x, np.float64), np.asarray(mask, bool)
  fill = np.broadcast_to(np.asarray(pixel_means, np.float64), x.shape)
  num_missing = max(int(mask.sum()), 1)
  baseline = {"mse": float(np.where(mask, (fill - x) ** 2, 0.0).sum() / num_missing)}
  if _is_binary(x):
    baseline["error_rate"] = float(np.where(mask, (fill > 0.5) != (x > 0.5), 0.0).sum()
                                   / num_missing)
  return baseline
