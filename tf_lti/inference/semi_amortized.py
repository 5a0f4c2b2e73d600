"""Semi-amortized inference: an encoder's lambda_0 refined by K differentiable SVI steps.

```none
lambda_0 = encoder(x)               (or a constant, N(0, I), for plain SVI)
lambda_K = SVI_K(lambda_0; x, theta)   (K momentum-SGD steps on each example's negative bound; svi.py)
```

Training modes (what receives gradient from what; Kim et al. 2018, section 3 and
their code's flags):

| mode          | encoder phi is trained on                   | decoder theta is trained on          |
|---------------|---------------------------------------------|--------------------------------------|
| `savae`       | -ELBO(lambda_K), total derivative through all K steps | -ELBO(lambda_K), directly and through every step |
| `vae+svi`     | -ELBO(lambda_0)                             | -ELBO(sg(lambda_K))                  |
| `vae+svi+kl`  | KL(q(lambda_0) || q(sg(lambda_K)))           | -ELBO(sg(lambda_K))                  |
| `svi`         | (no encoder; lambda_0 = 0)                   | -ELBO(sg(lambda_K))                  |

The SVI objective is the training bound with the current KL weight (annealing
applies inside SVI too, as in the reference); at test time the weight is 1. For
`savae`, `svi.SVISettings.backward` picks the backward pass: `reverse` (the
adjoint sweep with exact Hessian-vector products; memory flat in K apart from
storing lambda_k), `unrolled` (nested tapes; exact, memory grows with K),
`finite_difference` (the paper's method) or `auto` (the default: `unrolled` when
the K stored steps fit the memory budget, else `reverse`; `svi_memory.resolve_backward`,
resolved once per static batch shape).

Any trained model gets test-time SVI by wrapping its inference procedure as the
`encoder` ("VAE + SVI"); refinement only tightens the bound of the same theta,
it never changes the generative model (sample from the prior to generate).

#### References
[1] Kim, Wiseman, Miller, Sontag & Rush. Semi-Amortized Variational Autoencoders.
    ICML 2018. https://arxiv.org/abs/1802.02550
[2] Krishnan, Liang & Hoffman. On the challenges of learning with inference
    networks on sparse, high-dimensional data. AISTATS 2018.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tf_lti.config import choices
from tf_lti.inference import base
from tf_lti.inference import svi
from tf_lti.inference import svi_memory
from tf_lti.saving import serializable

tfd = tfp.distributions

__all__ = ["SemiAmortizedInference"]


class _VerdictsByBatch:
  """`auto`'s resolved backward pass per static batch (shape, dtype) and generative model.

  Resolving traces a step and its backward pass; caching it traces that once and
  makes the jit-compile verdict (`runs_model_in_loops`) and every trace of the
  training step agree, even if the memory available changes in between. A plain
  object, so that Keras does not track it as layer state.
  """

  def __init__(self):
    self._verdicts = {}

  def get(self, key, resolve):
    if key not in self._verdicts:
      self._verdicts[key] = resolve()
    return self._verdicts[key]


@serializable.serializable
class SemiAmortizedInference(base.InferenceProcedure):
  """lambda_0 from an encoder (or a constant), refined by K SVI steps.

  Args:
    family: a `posteriors.base.PosteriorFamily`.
    latent_size: Z.
    objective: the `objectives.estimators.Objective` whose bound SVI maximizes.
    settings: an `svi.SVISettings`.
    mode: one of `MODES`. Default value: `"savae"`.
    encoder: an `InferenceProcedure` giving lambda_0 (any procedure: a standard
      encoder, an iterative model); `None` starts from zeros (N(0, I) for the
      diagonal family), which `mode="svi"` requires.
  """

  @property
  def prefers_xla(self):
    """The encoder's preference (`True` without one: the SVI loop itself compiles well)."""
    return True if self.encoder is None else self.encoder.prefers_xla

  def __init__(self, family, latent_size, objective, settings, *, mode="savae", encoder=None,
               **kwargs):
    super().__init__(family, latent_size, **kwargs)
    if mode not in choices.SVI_TRAINING_MODES:
      raise ValueError(f"`svi_training` must be one of {choices.SVI_TRAINING_MODES}; got {mode!r}.")
    if (mode == "svi") != (encoder is None):
      raise ValueError(f"`svi_training={mode}` {'takes no' if mode == 'svi' else 'needs an'} "
                       "encoder.")
    if encoder is not None and encoder.num_params != self.num_params:
      raise ValueError(f"The encoder gives {encoder.num_params} params; the family needs "
                       f"{self.num_params}.")
    self.objective = objective
    self.settings = settings
    self.mode = mode
    self.encoder = encoder
    self._backward_verdicts = _VerdictsByBatch()

  refinement_name = "svi_steps"

  @property
  def num_refinement_steps(self):
    """K, the SVI steps (validation tracks the bound after each)."""
    return self.settings.num_steps

  @property
  def refinement_controls(self):
    """`num_steps`, `mean_step_size` and (unless a point estimate) `variance_step_size`."""
    settings = self.settings
    controls = {"num_steps": settings.num_steps, "mean_step_size": settings.mean_step_size}
    if self.num_groups > 1:  # A point estimate has no variance parameters.
      controls["variance_step_size"] = settings.variance_step_size
    return controls

  @property
  def initializer(self):
    """The encoder giving lambda_0, or `None` (zeros)."""
    return self.encoder

  @property
  def num_groups(self):
    return len(self.family.param_groups)

  def initial_estimate(self, x, generative, *, seed):
    """lambda_0, from the encoder seed `infer` splits off `seed`."""
    init_seed = tf.random.experimental.stateless_split(seed, 3)[0]  # as `infer` splits it
    return self.initial_params(x, generative, seed=init_seed, training=False)

  def initial_params(self, x, generative, *, seed, training=False):
    """lambda_0 `[B, P]`: the encoder's params, or zeros."""
    if self.encoder is None:
      return tf.zeros([tf.shape(x)[0], self.num_params], self.variable_dtype)
    return self.encoder.infer(x, generative, seed=seed, training=training).params

  def svi_loss(self, x, generative, *, kl_weight=1.0, training=False):
    """`(params [B, P], seed [2]) -> [B]`: each example's negative (KL-weighted) bound."""
    def loss(params, seed):
      terms = self.objective(x, generative, self.family.distribution(params), seed=seed,
                             kl_weight=kl_weight, training=training)
      return -terms["bound"]
    return loss

  def infer(self, x, generative, *, seed, training=False, num_steps=None, mean_step_size=None,
            variance_step_size=None):
    """lambda_K and the bound trajectory `[K + 1, B]` (single-sample bounds at lambda_0 ... lambda_K).

    Args:
      x: `[B, ...]` data.
      generative: the generative model.
      seed: stateless seed `[2]`.
      training: batch-norm/dropout mode. Default value: `False`.
      num_steps: K at test time (default: `settings.num_steps`), a Python int or
        a scalar int32 `Tensor`.
      mean_step_size, variance_step_size: SVI step sizes at test time (default:
        the settings'), floats or scalar `Tensor`s.
    """
    init_seed, svi_seed, final_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    params = tf.stop_gradient(self.initial_params(x, generative, seed=init_seed, training=training))
    loss_fn = self.svi_loss(x, generative, training=training)
    params, losses, _ = svi.refine(params, loss_fn, self.settings, self.num_groups,
                                   seed=svi_seed, num_steps=num_steps,
                                   mean_step_size=mean_step_size,
                                   variance_step_size=variance_step_size)
    final = -loss_fn(params, final_seed)
    return base.InferenceResult(params=params,
                                bound_trajectory=tf.concat([-losses, final[None]], axis=0))

  def _backward(self, x, generative, loss_fn, seed):
    """The `savae` backward pass for `x`'s static batch: `svi_memory.resolve_backward`, once
    per batch shape and dtype and generative model."""
    shape = tf.TensorShape(x.shape)  # a Tensor's, or a tuple (Keras' symbolic inputs)
    key = (tuple(shape.as_list()) if shape.rank is not None else None,
           tf.as_dtype(x.dtype).name, id(generative))
    params = tf.TensorSpec([shape[0], self.num_params], self.variable_dtype)  # lambda's dtype
    return self._backward_verdicts.get(
        key, lambda: svi_memory.resolve_backward(self.settings, loss_fn, params, seed))

  def runs_model_in_loops(self, x_spec, generative):
    """`True` unless training is `savae` and its backward pass resolves to `unrolled` for
    `x_spec` (`svi_memory.resolve_backward`, as `training_gradients` resolves it; an unknown batch
    shape resolves `auto` to `reverse`): every other mode refines in a `tf.while_loop`."""
    if self.mode != "savae":
      return True
    if self.settings.backward != "auto" or x_spec is None:
      return self.settings.backward != "unrolled"
    resolved = []

    def trace(x):
      loss_fn = self.svi_loss(x, generative, training=True)
      resolved.append(self._backward(x, generative, loss_fn, tf.zeros([2], tf.int32)))
      return tf.zeros([])

    tf.function(trace, autograph=False).get_concrete_function(x_spec)
    return resolved[0] != "unrolled"

  def training_gradients(self, x, generative, objective, *, seed, kl_weight, step=0,
                         loss_scale=None):
    """Gradients of one training step, by mode (see the module docstring).

    `step` is unused: semi-amortized training uses the reparameterization
    estimator, whose objective has no schedule. `loss_scale` scales every
    returned gradient (`base.InferenceProcedure.training_gradients`); the SVI
    steps and the reverse sweep run on the unscaled adjoint (so that its clip
    norm keeps its meaning), whose results are then scaled.

    Returns:
      A `base.TrainingGradients`; `terms` are the training bound's terms at lambda_K.
    """
    del step
    init_seed, svi_seed, outer_seed, encoder_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    generative_vars = generative.trainable_variables
    inference_vars = self.trainable_variables
    loss_fn = self.svi_loss(x, generative, kl_weight=kl_weight, training=True)

    def final_loss(params):
      terms = objective(x, generative, self.family.distribution(params), seed=outer_seed,
                        kl_weight=kl_weight, training=True)
      return -tf.reduce_mean(terms["bound"]), terms

    backward = (self._backward(x, generative, loss_fn, svi_seed)
                if self.mode == "savae" else None)
    if backward == "unrolled":
      with tf.GradientTape(persistent=True) as tape:
        params = self.initial_params(x, generative, seed=init_seed, training=True)
        params, _ = svi.unrolled_refine(params, loss_fn, self.settings, self.num_groups,
                                        seed=svi_seed)
        loss, terms = final_loss(params)
        scaled_loss = base.scale_loss(loss, loss_scale)
      generative_grads = tape.gradient(scaled_loss, generative_vars)
      inference_grads = tape.gradient(scaled_loss, inference_vars)
      del tape
      return base.TrainingGradients(generative_grads, inference_grads, loss, terms, params)

    if self.mode == "savae":
      with tf.GradientTape() as encoder_tape:
        initial = self.initial_params(x, generative, seed=init_seed, training=True)
      params, _, stored = svi.refine(tf.stop_gradient(initial), loss_fn, self.settings,
                                     self.num_groups, seed=svi_seed, store=True)
      with tf.GradientTape() as tape:
        tape.watch(params)
        loss, terms = final_loss(params)
        scaled_loss = base.scale_loss(loss, loss_scale)
      grads = tape.gradient(scaled_loss, [params] + generative_vars)
      adjoint = grads[0] if loss_scale is None else grads[0] / loss_scale
      initial_bar, through_steps = svi.reverse_sweep(adjoint, stored, loss_fn, generative_vars,
                                                     self.settings, self.num_groups,
                                                     seed=svi_seed)
      if loss_scale is not None:
        initial_bar = initial_bar * loss_scale
        through_steps = [indirect * loss_scale for indirect in through_steps]
      generative_grads = [tf.convert_to_tensor(direct) + indirect
                          for direct, indirect in zip(grads[1:], through_steps)]
      inference_grads = encoder_tape.gradient(initial, inference_vars,
                                              output_gradients=initial_bar)
      return base.TrainingGradients(generative_grads, inference_grads, loss, terms, params)

    # vae+svi, vae+svi+kl, svi: the decoder learns at the refined, constant lambda_K.
    with tf.GradientTape() as encoder_tape:
      initial = self.initial_params(x, generative, seed=init_seed, training=True)
      with encoder_tape.stop_recording():
        params, _, _ = svi.refine(tf.stop_gradient(initial), loss_fn, self.settings,
                                  self.num_groups, seed=svi_seed)
      if self.mode == "vae+svi":
        encoder_loss = -tf.reduce_mean(objective(
            x, generative, self.family.distribution(initial), seed=encoder_seed,
            kl_weight=kl_weight, training=True)["bound"])
      elif self.mode == "vae+svi+kl":
        encoder_loss = tf.reduce_mean(tfd.kl_divergence(
            self.family.distribution(initial),
            self.family.distribution(tf.stop_gradient(params))))
      if inference_vars:  # scaled on the tape (`svi` has no encoder and no encoder loss)
        encoder_loss = base.scale_loss(encoder_loss, loss_scale)
    with tf.GradientTape() as tape:
      loss, terms = final_loss(tf.stop_gradient(params))
      scaled_loss = base.scale_loss(loss, loss_scale)
    generative_grads = tape.gradient(scaled_loss, generative_vars)
    inference_grads = (encoder_tape.gradient(encoder_loss, inference_vars)
                       if inference_vars else [])
    return base.TrainingGradients(generative_grads, inference_grads, loss, terms, params)
