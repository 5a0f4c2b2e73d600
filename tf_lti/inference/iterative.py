"""Iterative inference models: learned optimizers of the ELBO in posterior space.

```none
lambda_0     = prior parameters N(0, I)              (or a learned constant)
for t = 0 ... T-1, per latent level l:
  inputs_t,l = concat( x - 1/2, or TF-IDF(x) (`input_idf`)      ("data",     bottom level only)
                       sg(lambda_t,l)                            ("params")
                       enc(sg(grad_lambda_t,l ELBO_t(x_b)))      ("gradient", per example)
                       sg(bottom-up error), sg(top-down error) ) ("error")
  h          = MLP_l(inputs_t,l)              (recurrent: h, c = LSTM(MLP_l(inputs), (h, c)))
  g          = sigmoid(W_g h + b_g)
  lambda_t+1,l = g * sg(lambda_t,l) + (1 - g) * (W_f h + b_f)   ("gated", eq. 62)
             or sg(lambda_t,l) + W_f h + b_f                      ("residual")
```

Errors (Marino et al. 2018, section 4.1, appendix A): the bottom-up error of the
first level is the data prediction error `x - mu_x`; of a higher level it is the
top-down error of the level below; each level's top-down error is `z_l - mu_p`
(`z_L` at the N(0, I) top). `error_encoding="normalized"` multiplies them by the
precisions, `(x - mu_x) / sigma_x^2` and `(z_l - mu_p) / sigma_p^2`, as in the
paper's definitions; the default `"residual"` drops the variances, as the
paper's experiments did (appendix B.1) -- with learned conditional prior
variances the precision can reach e^15 and the hierarchical model diverges. They are averaged over the S samples of the ELBO and
need no gradients, even at test time. Encoded gradients are the per-example
gradients of the (KL-weighted) bound, treated as constants.

Training (appendix B.3): the inference model's gradient is the average over
t = 1 ... T of grad_phi(-ELBO_t), each step's loss weighted equally; the
generative model's gradient comes from ELBO_T alone. Every input is a constant
(`stop_gradient`), so for the feed-forward model no gradient crosses iterations:
`training_gradients` computes and accumulates each step's gradients inside the
loop, and memory stays flat in T. The recurrent model backpropagates through
time over its LSTM states (one tape over all iterations).

#### References
[1] Marino, Yue & Mandt. Iterative Amortized Inference. ICML 2018 (Learning to
    Infer, ICLR workshop 2018). https://arxiv.org/abs/1807.09356
[2] Andrychowicz et al. Learning to learn by gradient descent by gradient
    descent. NeurIPS 2016. https://arxiv.org/abs/1606.04474
"""

import keras
import tensorflow as tf

from tf_lti.config import choices
from tf_lti.config import settings as settings_lib
from tf_lti.data import documents
from tf_lti.inference import base
from tf_lti.models import layers
from tf_lti.models import precision
from tf_lti.saving import serializable

__all__ = ["ERROR_PARTS", "IterativeInferenceModel"]

# The prediction errors each of `choices.ERROR_ENCODINGS` encodes: residuals (x - mu_x,
# z - mu_p), as in the paper's experiments (B.1: "we drop sigma_x^2 and sigma_p^2"), or
# residuals times the precision.
ERROR_PARTS = {"residual": ("data_residual", "latent_residual"),
               "normalized": ("data_error", "latent_error")}


@serializable.serializable
class IterativeInferenceModel(base.InferenceProcedure):
  """A learned, iterated update of posterior parameters (one network per latent level).

  Args:
    family: a `posteriors.base.PosteriorFamily`.
    latent_sizes: sizes of z_1 ... z_L, bottom first.
    hidden_units: width of each level's network.
    objective: the `objectives.estimators.Objective` whose ELBO is refined at test time
      (training uses the objective `training_gradients` is given).
    num_hidden_layers: hidden layers per network. Default value: 2.
    settings: a `config.settings.IterativeSettings`: T (`num_iterations`, refinement steps
      in training and by default in `infer`), the `inputs` (concatenated in the order of
      `choices.ITERATIVE_INPUTS`), their gradient and error encodings, `recurrent` (an LSTM
      over iterations after each level's MLP, state reset per batch, trained by
      backpropagation through time), the `update`, and `learned_initialization` (start from
      a learned constant instead of N(0, I), trained by the bound at the initial estimate).
      Default value: `IterativeSettings()`.
    activation, connection, batch_norm: see `layers.MLP`.
    networks: `None` for the MLPs, or one Keras network per latent level that
      maps the level's concatenated encoded inputs `[B, width_l]` to features
      `[B, H_l]` (the proposal and gate heads follow it); then `hidden_units`
      is needed only by the recurrent model (its LSTM sizes). Default value: `None`.
    input_idf: `None` for the `data` input x - 1/2, or V inverse document
      frequencies for normalized TF-IDF features of word counts x
      (`documents.tfidf`). Default value: `None`.
  """

  def __init__(self, family, latent_sizes, hidden_units, objective, num_hidden_layers=2, *,
               settings=settings_lib.IterativeSettings(), activation="elu",
               connection="highway", batch_norm=False, networks=None, input_idf=None,
               **kwargs):
    super().__init__(family, sum(latent_sizes), **kwargs)
    if networks is not None and len(networks) != len(latent_sizes):
      raise ValueError(f"`networks` needs one network per latent level ({len(latent_sizes)}); "
                       f"got {len(networks)}.")
    if (networks is None or settings.recurrent) and (
        hidden_units is None or len(hidden_units) != len(latent_sizes)):
      raise ValueError(f"`hidden_units` needs one entry per latent level ({len(latent_sizes)}); "
                       f"got {hidden_units!r}.")
    settings.check_bound(objective.bound)
    self.latent_sizes = tuple(latent_sizes)
    self.input_idf = None if input_idf is None else tuple(float(v) for v in input_idf)
    self.objective = objective
    self.num_iterations = int(settings.num_iterations)
    self.inputs = tuple(name for name in choices.ITERATIVE_INPUTS if name in settings.inputs)
    self.gradient_encoding = settings.gradient_encoding
    self.gradient_scale = settings.gradient_scale
    self._error_names = ERROR_PARTS[settings.error_encoding]
    self.recurrent = settings.recurrent
    self.update = settings.update
    self._num_groups = len(family.param_groups)
    # Each iteration's inputs have their own statistics: batch norm keeps one set per iteration.
    self._torsos = [layers.MLP(units, num_hidden_layers, activation, connection, batch_norm,
                               num_iterations=self.num_iterations, name=f"torso_{level}")
                    for level, units in enumerate(hidden_units)] if networks is None else None
    self._networks = None if networks is None else list(networks)
    self._cells = ([keras.layers.LSTMCell(units, name=f"lstm_{level}")
                    for level, units in enumerate(hidden_units)] if self.recurrent else None)
    self._proposals = [keras.layers.Dense(self._num_groups * size, name=f"proposal_{level}")
                       for level, size in enumerate(latent_sizes)]
    self._gates = ([keras.layers.Dense(self._num_groups * size, name=f"gate_{level}")
                    for level, size in enumerate(latent_sizes)] if self.update == "gated" else None)
    self._initial = (self.add_weight(shape=(self.num_params,), initializer="zeros",
                                     name="initial_params")
                     if settings.learned_initialization else None)

  refinement_name = "iterations"
  stepwise = True

  @property
  def num_refinement_steps(self):
    """T, the trained number of iterations."""
    return self.num_iterations

  @property
  def refinement_controls(self):
    return {"num_iterations": self.num_iterations}

  def initial_estimate(self, x, generative, *, seed):
    """lambda_0: N(0, I) parameters or the learned constant."""
    del generative, seed  # lambda_0 does not depend on them.
    return self.initial_params(tf.shape(x)[0], x.dtype)

  @property
  def needs_gradient(self):
    return "gradient" in self.inputs

  @property
  def needs_errors(self):
    return "error" in self.inputs

  def initial_params(self, batch_size, dtype=tf.float32):
    """lambda_0 `[B, P]`: N(0, I) parameters or the learned constant."""
    if self._initial is None:
      return self.family.initial_params(batch_size, self.latent_size, dtype)
    return tf.tile(tf.convert_to_tensor(self._initial)[None], [batch_size, 1])

  def initial_state(self, batch_size):
    """Recurrent state per level (zeros: reset for every batch); `[]` for feed-forward models.

    In the networks' compute dtype, as the cells return it.
    """
    if not self.recurrent:
      return []
    return [[tf.zeros([batch_size, cell.units], self.compute_dtype)] * 2 for cell in self._cells]

  def evaluate(self, x, generative, objective, params, *, seed, kl_weight, training,
               with_gradient):
    """The bound at `params` and the feedback the next update encodes.

    Args:
      x: `[B, D]`; params: `[B, P]`.
      with_gradient: compute the per-example gradient of the bound w.r.t. params
        (by an inner tape; the result is a constant).

    Returns:
      terms: the objective's dict of `[B]` tensors (and errors, when encoded),
        differentiable w.r.t. `params` and the weights for an outer tape.
      feedback: dict with `gradient` `[B, P]` and/or the errors, all constants.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(params)
      terms = objective(x, generative, self.family.distribution(params), seed=seed,
                        kl_weight=kl_weight, training=training, with_errors=self.needs_errors)
      # Examples are independent, so d(sum_b bound_b) / d params_b is example b's own gradient.
      total = tf.reduce_sum(terms["bound"])
    feedback = self.feedback(terms)
    if with_gradient:
      feedback["gradient"] = tf.stop_gradient(tape.gradient(total, params))
    return terms, feedback

  def feedback(self, terms):
    """The errors of `terms` as constants (an empty dict without error encoding)."""
    if not self.needs_errors:
      return {}
    data_error, latent_error = self._error_names
    return {"data_error": tf.stop_gradient(terms[data_error]),
            "latent_error": tf.stop_gradient(terms[latent_error])}

  def _level_inputs(self, x, params, feedback):
    """Per-level network inputs, each `[B, width_l]`."""
    params_by_level = base.split_levels(params, self._num_groups, self.latent_sizes)
    gradients = (base.split_levels(feedback["gradient"], self._num_groups, self.latent_sizes)
                 if "gradient" in self.inputs else None)
    latent_errors = (tf.split(feedback["latent_error"], self.latent_sizes, axis=-1)
                     if "error" in self.inputs else None)
    level_inputs = []
    for level in range(len(self.latent_sizes)):
      parts = []
      if "data" in self.inputs and level == 0:
        parts.append(x - 0.5 if self.input_idf is None else documents.tfidf(x, self.input_idf))
      if "params" in self.inputs:
        parts.append(tf.stop_gradient(params_by_level[level]))
      if "gradient" in self.inputs:
        parts.append(base.encode_gradient(gradients[level], self.gradient_encoding,
                                          self.gradient_scale))
      if "error" in self.inputs:
        bottom_up = feedback["data_error"] if level == 0 else latent_errors[level - 1]
        parts += [bottom_up, latent_errors[level]]
      level_inputs.append(tf.concat(parts, axis=-1))
    return level_inputs

  def step(self, x, params, feedback, state, iteration, training=False):
    """One update lambda_t -> lambda_t+1 (eq. 62, per level).

    Args:
      x: `[B, D]`.
      params: lambda_t `[B, P]` (a constant to the update).
      feedback: from `evaluate` at `params`.
      state: recurrent state from `initial_state` (`[]` for feed-forward models).
      iteration: t, a scalar int (Python or `Tensor`): selects the batch-norm
        statistics of the networks (the last trained ones for t >= T).
      training: batch-norm mode of the networks.

    Returns:
      (params_next `[B, P]`, state_next).
    """
    old = base.split_levels(tf.stop_gradient(params), self._num_groups, self.latent_sizes)
    new, new_state = [], []
    for level, inputs in enumerate(self._level_inputs(x, params, feedback)):
      h = (self._torsos[level](inputs, training=training, iteration=iteration)
           if self._networks is None else self._networks[level](inputs, training=training))
      if self.recurrent:
        h, level_state = self._cells[level](h, state[level], training=training)
        new_state.append(level_state)
      # The update of lambda is float32 under any policy.
      proposal = precision.to_float32(self._proposals[level](h))
      if self.update == "gated":
        gate = tf.sigmoid(precision.to_float32(self._gates[level](h)))
        new.append(gate * old[level] + (1.0 - gate) * proposal)
      else:
        new.append(old[level] + proposal)
    return base.join_levels(new, self._num_groups), new_state

  def infer(self, x, generative, *, seed, training=False, num_iterations=None):
    """Refines lambda_0 for `num_iterations` steps (default: the trained T).

    Steps 1 ... T-1 run in a `tf.while_loop`, so the traced program does not
    grow with T; the last step needs no encoded gradient and is peeled off.
    A `Tensor` count (a serving input) runs every step in the loop instead (T is
    unknown when tracing; the last step's encoded gradient is computed unused).

    Args:
      x: `[B, D]`.
      generative: the generative model.
      seed: stateless seed `[2]`.
      training: batch-norm mode. Default value: `False`.
      num_iterations: T >= 0, a Python int or a scalar int32 `Tensor`.
        Default value: `None` (the trained T).

    Returns:
      `InferenceResult` with `params` lambda_T `[B, P]` and `bound_trajectory`
      `[T + 1, B]`, the ELBO at lambda_0 ... lambda_T.
    """
    num_iterations = self.num_iterations if num_iterations is None else num_iterations
    dynamic = tf.is_tensor(num_iterations)
    if not dynamic:
      num_iterations = int(num_iterations)
      if num_iterations < 0:
        raise ValueError(f"`num_iterations` must be >= 0; got {num_iterations}.")
    batch_size = tf.shape(x)[0]
    seeds = tf.random.experimental.stateless_split(seed, num_iterations + 1)

    def evaluate(params, step_seed, with_gradient):
      return self.evaluate(x, generative, self.objective, params, seed=step_seed, kl_weight=1.0,
                           training=training, with_gradient=with_gradient)

    params = self.initial_params(batch_size, x.dtype)
    state = self.initial_state(batch_size)
    terms, feedback = evaluate(params, seeds[0],
                               self.needs_gradient and (dynamic or num_iterations > 0))
    bounds = tf.TensorArray(x.dtype, size=num_iterations + 1).write(0, terms["elbo"])
    if not dynamic and num_iterations == 0:
      return base.InferenceResult(params=params, bound_trajectory=bounds.stack())

    def body(t, params, feedback, state, bounds):
      params, state = self.step(x, params, feedback, state, t - 1, training)
      terms, feedback = evaluate(params, seeds[t], self.needs_gradient)
      return t + 1, params, feedback, state, bounds.write(t, terms["elbo"])

    # A static T peels the last step off the loop; a dynamic one runs all T in it.
    last_in_loop = num_iterations if dynamic else num_iterations - 1
    _, params, feedback, state, bounds = tf.while_loop(
        lambda t, *_: t <= last_in_loop, body, (tf.constant(1), params, feedback, state, bounds))
    if dynamic:
      return base.InferenceResult(params=params, bound_trajectory=bounds.stack())
    params, _ = self.step(x, params, feedback, state, num_iterations - 1, training)
    terms, _ = evaluate(params, seeds[num_iterations], False)
    bounds = bounds.write(num_iterations, terms["elbo"])
    return base.InferenceResult(params=params, bound_trajectory=bounds.stack())

  def training_losses(self, x, generative, objective, *, seed, kl_weight, step=0):
    """Losses whose autodiff gives the paper's gradients (any model, incl. recurrent).

    ```none
    inference_loss  = (1/T) sum_{t=1..T} -mean_b bound_t   (+ -mean_b bound_0 / T if lambda_0 is learned)
    generative_loss = -mean_b bound_T
    ```
    `step` is unused: iterative models train with the reparameterization
    estimator, whose objective has no schedule.
    """
    del step
    batch_size = tf.shape(x)[0]
    seeds = tf.random.experimental.stateless_split(seed, self.num_iterations + 1)
    params = self.initial_params(batch_size, x.dtype)
    state = self.initial_state(batch_size)
    losses = []
    for t in range(self.num_iterations + 1):
      if t > 0:
        params, state = self.step(x, params, feedback, state, t - 1, training=True)
      terms, feedback = self.evaluate(
          x, generative, objective, params, seed=seeds[t], kl_weight=kl_weight, training=True,
          with_gradient=self.needs_gradient and t < self.num_iterations)
      if t > 0 or self._initial is not None:
        losses.append(-tf.reduce_mean(terms["bound"]))
    inference_loss = tf.add_n(losses) / float(self.num_iterations)
    return base.TrainingLosses(generative_loss=losses[-1], inference_loss=inference_loss,
                               terms=self._final_terms(terms), params=params)

  @staticmethod
  def _final_terms(terms):
    """The terms worth logging: the per-example bounds, without the encoded errors."""
    return {name: value for name, value in terms.items()
            if name not in ("data_residual", "data_error", "latent_residual", "latent_error")}

  def training_gradients(self, x, generative, objective, *, seed, kl_weight, step=0,
                         loss_scale=None):
    """Per-step accumulated gradients, memory flat in T (feed-forward models).

    Each step t has its own tape; one backward pass gives grad_phi(-ELBO_t), the
    encoded gradient d bound_t / d lambda_t and, at t = T, grad_theta(-ELBO_T).
    Steps 1 ... T-1 run in a `tf.while_loop` carrying only lambda_t, the
    feedback and the gradient sums, so neither activations nor the program grow
    with T. Recurrent models (whose gradients cross iterations) use the generic path.
    `step` is unused (see `training_losses`); `loss_scale` scales every returned
    gradient (`base.InferenceProcedure.training_gradients`), never the encoded one.
    """
    if self.recurrent:
      return super().training_gradients(x, generative, objective, seed=seed, kl_weight=kl_weight,
                                        loss_scale=loss_scale)
    del step
    batch_size = tf.shape(x)[0]
    num_iterations = self.num_iterations
    seeds = tf.random.experimental.stateless_split(seed, num_iterations + 1)
    inference_vars = self.trainable_variables
    generative_vars = generative.trainable_variables

    def differentiate(make_params, step_seed, with_generative):
      """Bound at make_params() and the gradients of its loss in one backward pass."""
      # Only the requested sources are differentiated: before the last step the
      # decoder's weight gradients are never computed.
      with tf.GradientTape() as tape:
        params = make_params()
        tape.watch(params)
        terms = objective(x, generative, self.family.distribution(params), seed=step_seed,
                          kl_weight=kl_weight, training=True, with_errors=self.needs_errors)
        loss = -tf.reduce_mean(terms["bound"])
        scaled_loss = base.scale_loss(loss, loss_scale)
      sources = [params] + inference_vars + (generative_vars if with_generative else [])
      grads = [tf.zeros(source.shape, source.dtype) if grad is None else grad
               for source, grad in zip(sources, tape.gradient(scaled_loss, sources))]
      feedback = self.feedback(terms)
      if self.needs_gradient:
        # loss = -mean_b bound_b, so each example's own gradient is -B * d loss / d params_b.
        unscaled = grads[0] if loss_scale is None else grads[0] / loss_scale
        feedback["gradient"] = tf.stop_gradient(-tf.cast(batch_size, params.dtype) * unscaled)
      inference_grads = [g / float(num_iterations) for g in grads[1:1 + len(inference_vars)]]
      return (tf.stop_gradient(params), feedback, inference_grads, loss, terms,
              grads[1 + len(inference_vars):])

    # t = 0: the bound at lambda_0 (its inference gradient is zero unless lambda_0 is learned).
    params, feedback, inference_grads, _, _, _ = differentiate(
        lambda: self.initial_params(batch_size, x.dtype), seeds[0], False)

    def body(t, params, feedback, inference_grads):
      params, feedback, step_grads, _, _, _ = differentiate(
          lambda: self.step(x, params, feedback, [], t - 1, training=True)[0], seeds[t], False)
      return t + 1, params, feedback, [a + g for a, g in zip(inference_grads, step_grads)]

    _, params, feedback, inference_grads = tf.while_loop(
        lambda t, *_: t < num_iterations, body,
        (tf.constant(1), params, feedback, inference_grads))
    params, _, step_grads, loss, terms, generative_grads = differentiate(
        lambda: self.step(x, params, feedback, [], num_iterations - 1, training=True)[0],
        seeds[num_iterations], True)
    return base.TrainingGradients(
        generative=generative_grads,
        inference=[a + g for a, g in zip(inference_grads, step_grads)],
        loss=loss, terms=self._final_terms(terms), params=params)
