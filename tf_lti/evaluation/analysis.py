"""Inference diagnostics: ELBO landscapes, refinement over iterations, optimizer baselines.

These compute what the papers' figures show (Marino et al. 2018, figures 1, 3, 4,
6 and 10; Kim et al. 2018, figure 1; Rezende et al. 2014, figure 3b); `reporting.plots`
draws them and `trainers/analyze.py` runs them on a trained work directory (the
standard encoder it fits for comparison is trained by `training.baselines`).
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.data import readers
from tf_lti.objectives import bounds as bounds_lib
from tf_lti.objectives import estimators

__all__ = [
    "elbo_landscape", "embedding_summary", "gradient_variances", "iteration_diagnostics",
    "likelihood_means", "load_labels", "optimize_params", "posterior_means",
    "refinement_trajectory", "source_labels",
]


def elbo_landscape(x, generative, family, grid, *, seed, num_samples=1):
  """The ELBO of one example over a grid of 2-D posterior means.

  For the point-estimate family this is log p(x, z = mu) exactly; for Gaussian
  families the other parameters are held at their N(0, I) values.

  Args:
    x: float `Tensor` `[1, D]`.
    generative: a `models.base.GenerativeModel` with a two-dimensional latent.
    family: a `posteriors.base.PosteriorFamily`.
    grid: float `np.ndarray` `[G, 2]` of means.
    seed: stateless seed `[2]`.
    num_samples: draws per grid point. Default value: 1.

  Returns:
    elbo: `np.ndarray` `[G]`.
  """
  if generative.latent_size != 2:
    raise ValueError(f"An ELBO landscape needs a 2-D latent space; the model has "
                     f"{generative.latent_size} dimensions.")
  grid = tf.constant(grid, x.dtype)
  groups = family.split(family.initial_params(tf.shape(grid)[0], 2, x.dtype))
  groups["loc"] = grid
  params = family.join(groups)
  x = tf.repeat(x, tf.shape(grid)[0], axis=0)
  terms = bounds_lib.elbo(x, generative, family.distribution(params), seed=seed,
                          num_samples=num_samples, kl="sample")
  return terms["elbo"].numpy()


def refinement_trajectory(model, x, *, seed, num_iterations=None):
  """Posterior parameters after each step of an iterative procedure, with wall-clock times.

  Args:
    model: a `vae.VAE` with an iterative inference procedure.
    x: float `Tensor` `[B, D]`.
    seed: stateless seed `[2]`.
    num_iterations: T (default: the trained number).

  Returns:
    params: `np.ndarray` `[T + 1, B, P]` (lambda_0 ... lambda_T).
    bounds: `np.ndarray` `[T + 1]`, the mean ELBO at each.
    seconds: `np.ndarray` `[T + 1]`, elapsed time when each bound was known.
  """
  inference = model.inference
  if not inference.stepwise:
    raise ValueError(f"`workdir` holds a {type(inference).__name__}; this analysis needs an "
                     "iterative inference model (`procedure=iterative`).")
  num_iterations = inference.num_iterations if num_iterations is None else num_iterations
  seeds = tf.random.experimental.stateless_split(seed, num_iterations + 1)

  @tf.function
  def evaluate(params, step_seed):
    return inference.evaluate(x, model.generative, inference.objective, params, seed=step_seed,
                              kl_weight=1.0, training=False,
                              with_gradient=inference.needs_gradient)

  @tf.function
  def step(params, feedback, state, iteration):
    return inference.step(x, params, feedback, state, iteration)

  def run():
    params = inference.initial_params(tf.shape(x)[0], x.dtype)
    state = inference.initial_state(tf.shape(x)[0])
    history, bounds, seconds = [], [], []
    start = time.perf_counter()
    for t in range(num_iterations + 1):
      terms, feedback = evaluate(params, seeds[t])
      bounds.append(float(tf.reduce_mean(terms["elbo"])))
      seconds.append(time.perf_counter() - start)
      history.append(params.numpy())
      if t < num_iterations:
        params, state = step(params, feedback, state, tf.constant(t))
    return np.stack(history), np.array(bounds), np.array(seconds)

  run()  # traces both functions, so the timed pass measures only computation
  return run()


def iteration_diagnostics(model, x, *, seed, num_iterations=None, num_samples=10):
  """Gradient magnitudes and ELBO improvement over an iterative model's steps (Marino fig. 11).

  ```none
  gradient_norm_t        = mean_b || grad_{mu_b} ELBO(x_b; lambda_t) ||_2       (posterior mean)
  relative_improvement_t = (ELBO_t - ELBO_0) / |ELBO_0|                       (batch means)
  ```

  Each ELBO and gradient uses `num_samples` draws (seeded per step).

  Args:
    model: a `vae.VAE` with an iterative inference procedure.
    x: float `Tensor` `[B, D]`.
    seed: stateless seed `[2]`.
    num_iterations: T (default: the trained number).
    num_samples: draws per ELBO. Default value: 10.

  Returns:
    dict of `np.ndarray` `[T + 1]`: `gradient_norm`, `elbo`, `relative_improvement`.
  """
  params, _, _ = refinement_trajectory(model, x, seed=seed, num_iterations=num_iterations)
  seeds = tf.random.experimental.stateless_split(tf.stack([seed[0], seed[1] + 1]), len(params))

  @tf.function
  def measure(step_params, step_seed):
    with tf.GradientTape() as tape:
      tape.watch(step_params)
      elbo = bounds_lib.elbo(x, model.generative, model.family.distribution(step_params),
                             seed=step_seed, num_samples=num_samples,
                             kl=model.objective.kl)["elbo"]
      total = tf.reduce_sum(elbo)  # examples are independent: each row is its own gradient
    gradient = model.family.split(tape.gradient(total, step_params))["loc"]
    return tf.reduce_mean(tf.norm(gradient, axis=-1)), tf.reduce_mean(elbo)

  norms, elbos = zip(*[[float(v) for v in measure(tf.constant(p), s)]
                       for p, s in zip(params, seeds)])
  elbos = np.array(elbos)
  return {"gradient_norm": np.array(norms), "elbo": elbos,
          "relative_improvement": (elbos - elbos[0]) / abs(elbos[0])}


def likelihood_means(model, params):
  """Likelihood means at the posterior means of `params` `[..., B, P]` -> `[..., B, D]`."""
  mean = model.family.distribution(tf.constant(params)).mean()
  return model.generative.mean(mean).numpy()


def _make_optimizer(name, learning_rate):
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate)
  if name == "sgd_momentum":
    return keras.optimizers.SGD(learning_rate, momentum=0.9)
  if name == "rmsprop":
    return keras.optimizers.RMSprop(learning_rate)
  if name == "adam":
    return keras.optimizers.Adam(learning_rate)
  raise ValueError(f"`optimizer` must be one of {choices.ANALYSIS_OPTIMIZERS}; got {name!r}.")


def optimize_params(x, generative, family, objective, initial_params, *, optimizer,
                    learning_rate, num_steps, seed):
  """Variational EM's E-step: gradient ascent on each example's ELBO in parameter space.

  Each example's parameters are optimized on its own ELBO (the loss is the sum
  over examples, so the step sizes are per example, not batch-size dependent).

  Args:
    x: float `Tensor` `[B, D]`.
    generative, family, objective: the model, posterior family and bound.
    initial_params: `[B, P]`.
    optimizer: one of `ANALYSIS_OPTIMIZERS`.
    learning_rate: Python float.
    num_steps: Python int.
    seed: stateless seed `[2]`; step t draws with a seed derived from (seed, t).

  Returns:
    bounds: `np.ndarray` `[num_steps + 1]`, the mean ELBO before each step and at the end.
    seconds: `np.ndarray` `[num_steps + 1]`, wall-clock time at each of those points.
  """
  params = tf.Variable(initial_params)
  keras_optimizer = _make_optimizer(optimizer, learning_rate)
  keras_optimizer.build([params])
  seeds = tf.random.experimental.stateless_split(seed, num_steps + 1)

  @tf.function
  def step(step_seed):
    with tf.GradientTape() as tape:
      terms = objective(x, generative, family.distribution(params), seed=step_seed)
      loss = -tf.reduce_sum(terms["elbo"])
    keras_optimizer.apply([tape.gradient(loss, params)], [params])
    return tf.reduce_mean(terms["elbo"])

  @tf.function
  def bound(step_seed):
    return tf.reduce_mean(objective(x, generative, family.distribution(params),
                                    seed=step_seed)["elbo"])

  step.get_concrete_function(seeds[0])  # trace outside the timed loop, without running
  bound.get_concrete_function(seeds[0])
  bounds, seconds = [], []
  start = time.perf_counter()
  for t in range(num_steps):
    seconds.append(time.perf_counter() - start)
    bounds.append(float(step(seeds[t])))
  seconds.append(time.perf_counter() - start)
  bounds.append(float(bound(seeds[num_steps])))
  return np.array(bounds), np.array(seconds)


def posterior_means(model, x, *, seed, batch_size=500):
  """Posterior means E_q[z | x] of the model's final posterior, batch by batch.

  Args:
    model: a `vae.VAE` (any inference procedure; its `infer` gives lambda).
    x: `np.ndarray` `[N, D]`.
    seed: Python int; batch i infers with the stateless seed (seed, i).
    batch_size: examples per `infer` call. Default value: 500.

  Returns:
    means: `np.ndarray` `[N, Z]` (levels concatenated, bottom first).
  """
  if batch_size < 1:
    raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")

  @tf.function
  def mean(x_batch, batch_seed):
    params = model.infer(x_batch, seed=batch_seed, training=False).params
    return model.family.distribution(params).mean()

  batches = [x[start:start + batch_size] for start in range(0, len(x), batch_size)]
  return np.concatenate([mean(tf.constant(batch), tf.constant([seed, index])).numpy()
                         for index, batch in enumerate(batches)])


def embedding_summary(coordinates, labels=None):
  """A summary of 2-D embedding coordinates and, with labels, how well the classes separate.

  Args:
    coordinates: `np.ndarray` `[N, 2]`.
    labels: optional int `np.ndarray` `[N]`.

  Returns:
    Dict: `num_examples`, `mean`, `std`, `min`, `max` (each `[2]`) and, with labels,
    `classes` (`{label: {"count", "centroid" [2]}}`) and `nearest_centroid_accuracy`, the
    fraction of points closer to their own class's centroid than to any other (1: the
    classes occupy separate regions; 1 / #classes: no structure).
  """
  coordinates = np.asarray(coordinates, np.float64)
  if coordinates.ndim != 2 or coordinates.shape[1] != 2 or not len(coordinates):
    raise ValueError(f"`coordinates` must be [N, 2] with N >= 1; got shape {coordinates.shape}.")
  summary = {"num_examples": len(coordinates), "mean": coordinates.mean(0).tolist(),
             "std": coordinates.std(0).tolist(), "min": coordinates.min(0).tolist(),
             "max": coordinates.max(0).tolist()}
  if labels is None:
    return summary
  labels = np.asarray(labels)
  if labels.shape != (len(coordinates),):
    raise ValueError(f"`labels` must be [{len(coordinates)}], one per point; got shape "
                     f"{labels.shape}.")
  classes = np.unique(labels)
  centroids = np.stack([coordinates[labels == c].mean(0) for c in classes])  # [C, 2]
  distances = np.linalg.norm(coordinates[:, None] - centroids[None], axis=-1)  # [N, C]
  summary["classes"] = {str(c): {"count": int(np.sum(labels == c)), "centroid": centroid.tolist()}
                        for c, centroid in zip(classes.tolist(), centroids)}
  summary["nearest_centroid_accuracy"] = float(np.mean(classes[distances.argmin(1)] == labels))
  return summary


def load_labels(path, key="y_test", num_examples=None):
  """Integer labels from the `.npz` file `path` (key `key`), checked against the data size.

  The file is read without unpickling (`data.readers.open_npz`).

  Raises:
    ValueError: a missing file or key, or labels that are not `[num_examples]`.
    data.common.DataError (a ValueError): a file that is no `.npz` archive (e.g. a
      pickle) or labels stored as an object array.
  """
  if not os.path.exists(path):
    raise ValueError(f"`labels` file {path!r} does not exist.")
  with readers.open_npz(path) as archive:
    if key not in archive.files:
      raise ValueError(f"`labels` file {path!r} has no key {key!r} "
                       f"(keys: {sorted(archive.files)}).")
    labels = readers.npz_array(archive, path, key)
  labels = labels.reshape(len(labels), -1)
  labels = labels[:, 0] if labels.shape[1] == 1 else labels.argmax(axis=1)  # one-hot -> ids
  if num_examples is not None and len(labels) != num_examples:
    raise ValueError(f"`labels` {path}[{key!r}] holds {len(labels)} labels; the data have "
                     f"{num_examples} examples.")
  return labels.astype(np.int64)


def source_labels(source, key="y_test", num_examples=None):
  """The labels a data source ships: `key` of an `.npz` source (e.g. grayscale MNIST's
  `y_test`) when it has that key and one label per example; else `None`.

  Raises:
    data.common.DataError (a ValueError): the source is no `.npz` archive (e.g. a
      pickle) or holds its labels as an object array; nothing is unpickled.
  """
  if not (isinstance(source, str) and source.endswith(".npz") and os.path.exists(source)):
    return None
  with readers.open_npz(source) as archive:
    if key not in archive.files:
      return None
  labels = load_labels(source, key)
  return labels if num_examples is None or len(labels) == num_examples else None


def gradient_variances(model, x, *, seed, num_draws, step=0, compare=("score_function", "gumbel_softmax")):
  """Variance of discrete gradient estimators at a trained model's posterior logits.

  For each estimator, the per-example `sum_z Var(g_z)` of its estimate of the
  bound's gradient with respect to the logits (`estimators.logits_gradient_variance`,
  `num_draws` independent draws), averaged over the examples: the model's own
  estimator (its objective, with a learned control variate as trained) and those
  in `compare`, at the same logits (S = max(2, the model's S) for `score_function`,
  whose leave-one-out baseline needs two samples).

  Args:
    model: a `vae.VAE` with the categorical posterior and a discrete estimator.
    x: float `[B, D]` examples.
    seed: Python int.
    num_draws: M >= 2.
    step: the training step, for an annealed temperature. Default value: 0.
    compare: names of other `choices.DISCRETE_ESTIMATORS` (without a learned control
      variate). Default value: `("score_function", "gumbel_softmax")`.

  Returns:
    Dict: estimator name -> mean over the examples of the summed variance (float).
  """
  own = model.objective
  if own.estimator not in choices.DISCRETE_ESTIMATORS:
    raise ValueError(f"A gradient-variance analysis needs a discrete estimator; the run's "
                     f"`estimator` is {own.estimator!r}.")
  x = tf.convert_to_tensor(x, tf.float32)
  logits = model.infer(x, seed=tf.constant([seed, 0]), training=False).params
  objectives = {own.estimator: own}
  for name in compare:
    if name in choices.CONTROL_VARIATE_ESTIMATORS or name not in choices.DISCRETE_ESTIMATORS:
      raise ValueError(f"`compare` must name discrete estimators without a control variate; "
                       f"got {name!r}.")
    num_samples = max(2, own.num_samples) if name == "score_function" else own.num_samples
    objectives.setdefault(name, estimators.Objective(
        estimator=name, num_samples=num_samples, temperature=own.temperature,
        min_temperature=own.min_temperature, temperature_decay=own.temperature_decay))
  results = {}
  for name, objective in objectives.items():
    variance, _ = estimators.logits_gradient_variance(
        x, model.generative, logits, model.family.num_categories, objective,
        seed=tf.constant([seed, 1]), num_draws=num_draws, step=step)
    results[name] = float(tf.reduce_mean(variance))
  return results
