"""Stochastic variational inference steps on posterior params, and their exact backward pass.

SVI refines posterior parameters lambda `[B, P]` by K steps of SGD with heavy-ball
momentum on each example's negative bound F_b (Kim et al. 2018, Algorithm 1):

```none
g_k     = grad_lambda sum_b F_b(lambda_k; eps_k, theta)       (per-example gradients, [B, P])
g~_k    = clip(g_k)                                           (per parameter group)
m_k     = rho m_{k-1} - g~_k,   m_{-1} = 0
lambda_{k+1} = lambda_k + alpha * m_k                          (alpha per group: mu, log sigma^2)
```

Backward ("reverse", the adjoint of the loop; memory O(K |lambda|), flat in K
apart from storing lambda_k): given lambda-bar_K = dL/dlambda_K,

```none
m-bar = 0
for k = K-1 ... 0:
  m-bar    = m-bar + alpha * lambda-bar
  u        = J_clip(g_k)^T m-bar
  lambda-bar = lambda-bar - H_lambda,lambda(lambda_k) u          (Hessian-vector products of
  theta-bar  = theta-bar  - H_theta,lambda(lambda_k) u            sum_b F_b, recomputed at lambda_k
  m-bar    = rho m-bar                                              with the replayed noise eps_k)
```

H u comes from exact second-order autodiff (backward-over-backward: a tape over
a tape, which also differentiates through the clipping; or forward-over-backward:
`tf.autodiff.ForwardAccumulator` around a tape) or from the paper's finite
difference (grad(lambda + r u) - grad(lambda)) / r with identical noise. Noise
is replayed exactly because every step draws from the stateless seed (seed, k).

Step sizes are per example. Kim et al.'s code differentiates the *batch mean*
of F with step size 1, so its per-example step is 1/B (0.02 for images at B = 50,
1/32 for text), and it clips the Frobenius norm of each whole `[B, Z]` group
gradient of the batch mean at 5. Per example gradients are B times larger, so
that clip is an RMS-per-example norm of 5 * sqrt(B): `clip_scope="batch"` with
`clip_norm = 5 sqrt(B)` reproduces it exactly, and `clip_scope="example"` (the
default) clips each example's group gradient at the same norm without coupling
the examples of a batch. The adjoint and H_theta,lambda u have the same units as the
reference's (its outer loss is a batch mean too), so their optional clip norms
(`adjoint_clip_norm`, reference 5) carry over unchanged.

#### References
[1] Kim, Wiseman, Miller, Sontag & Rush. Semi-Amortized Variational Autoencoders.
    ICML 2018. https://arxiv.org/abs/1802.02550
[2] Domke. Generic Methods for Optimization-Based Modeling. AISTATS 2012.
"""

import tensorflow as tf

from tf_lti.config import choices
from tf_lti.config import settings as settings_lib

__all__ = [
    "SVISettings", "clip_gradient", "hessian_vector_product", "hvp_method", "refine",
    "reverse_sweep", "step_sizes", "unrolled_refine", "value_and_gradient",
]

_CLIP_EPSILON = 1e-6

# The settings are TF-free (config validates them): `config.settings.SVISettings`.
SVISettings = settings_lib.SVISettings


def step_sizes(settings, num_groups, latent_size, dtype=tf.float32, *, mean_step_size=None,
               variance_step_size=None):
  """alpha `[P]`: `mean_step_size` on group 0, `variance_step_size` on the others.

  `mean_step_size` and `variance_step_size` (floats or scalar `Tensor`s, e.g.
  serving inputs) override the settings' when given.
  """
  mean = settings.mean_step_size if mean_step_size is None else mean_step_size
  variance = settings.variance_step_size if variance_step_size is None else variance_step_size
  # A Python float goes straight to `dtype` (tf.cast would round it through float32 first).
  mean, variance = (tf.cast(v, dtype) if tf.is_tensor(v) else tf.constant(v, dtype)
                    for v in (mean, variance))
  alphas = [mean] + [variance] * (num_groups - 1)
  return tf.repeat(tf.stack(alphas), latent_size)


def clip_gradient(gradient, num_groups, clip_norm, scope="example"):
  """Clips each parameter group's gradient to `clip_norm`.

  ```none
  example:  g_bg <- g_bg * min(1, c / (||g_bg|| + 1e-6))                 per example b, group g
  batch:    g_.g <- g_.g * min(1, c / (||g_.g||_F / sqrt(B) + 1e-6))      one scale per group
  ```

  Differentiable (the unrolled backward pass and the reverse sweep's clip
  Jacobian differentiate it).

  Args:
    gradient: `[B, G * Z]` in the family's group layout.
    num_groups: G.
    clip_norm: c; 0 returns `gradient` unchanged.
    scope: one of `choices.SVI_CLIP_SCOPES`. Default value: `"example"`.

  Returns:
    clipped: `[B, G * Z]`.
  """
  if not clip_norm:
    return gradient
  grouped = tf.reshape(gradient, [tf.shape(gradient)[0], num_groups, -1])  # [B, G, Z]
  if scope == "example":
    squares = tf.reduce_sum(tf.square(grouped), axis=-1, keepdims=True)  # [B, G, 1]
  elif scope == "batch":
    squares = tf.reduce_mean(tf.reduce_sum(tf.square(grouped), axis=-1, keepdims=True), axis=0,
                             keepdims=True)  # [1, G, 1]
  else:
    raise ValueError(f"`svi_clip_scope` must be one of {choices.SVI_CLIP_SCOPES}; got {scope!r}.")
  # sqrt(x + tiny) keeps the derivative finite at a zero gradient.
  norm = tf.sqrt(squares + 1e-30)
  scale = tf.minimum(clip_norm / (norm + _CLIP_EPSILON), 1.0)
  return tf.reshape(grouped * scale, tf.shape(gradient))


def value_and_gradient(loss_fn, params, seed):
  """Per-example losses `[B]` and d sum_b F_b / d params `[B, P]` at `params`."""
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(params)
    losses = loss_fn(params, seed)
    total = tf.reduce_sum(losses)
  return losses, tape.gradient(total, params)


def _step_seed(seed, k):
  return tf.random.experimental.stateless_fold_in(seed, k)


def _momentum_step(params, velocity, gradient, alpha, settings, num_groups):
  """One SVI update: returns (lambda_{k+1}, m_k) from lambda_k, m_{k-1} and g_k."""
  velocity = settings.momentum * velocity - clip_gradient(
      gradient, num_groups, settings.clip_norm, settings.clip_scope)
  return params + alpha * velocity, velocity


def _needs_stored_gradient(settings):
  """The reverse sweep reads g_k to apply the clip Jacobian before a non-nested HVP."""
  return bool(settings.clip_norm) and hvp_method(settings) != "backward_over_backward"


def refine(params, loss_fn, settings, num_groups, *, seed, num_steps=None, mean_step_size=None,
           variance_step_size=None, store=False):
  """K forward SVI steps from `params` (no gradient crosses them).

  Args:
    params: lambda_0, float `Tensor` `[B, P]`.
    loss_fn: `(params [B, P], seed [2]) -> [B]`, each example's negative bound;
      must be deterministic given the seed (stateless noise).
    settings: an `SVISettings`.
    num_groups: G, the family's number of parameter groups.
    seed: stateless seed `[2]`; step k uses `fold_in(seed, k)`.
    num_steps: K (default `settings.num_steps`); may differ from training's: a
      Python int or a scalar int32 `Tensor`.
    mean_step_size, variance_step_size: override the settings' step sizes (floats
      or scalar `Tensor`s). Default values: `None`.
    store: also return lambda_k for k < K, and g_k when `reverse_sweep` will need it
      (for `reverse_sweep`).

  Returns:
    params: lambda_K `[B, P]`.
    losses: `[K, B]`, F_b(lambda_k) for k = 0 ... K-1 (the bound trajectory before each step).
    stored: (lambdas `[K, B, P]`, gradients `[K, B, P]`, unwritten unless needed) if
      `store`, else `None`.
  """
  num_steps = settings.num_steps if num_steps is None else num_steps
  params = tf.convert_to_tensor(params)
  alpha = step_sizes(settings, num_groups, params.shape[-1] // num_groups, params.dtype,
                     mean_step_size=mean_step_size, variance_step_size=variance_step_size)
  batch = tf.shape(params)[0]
  store_gradients = store and _needs_stored_gradient(settings)

  def body(k, params, velocity, losses, lambdas, gradients):
    step_losses, gradient = value_and_gradient(loss_fn, params, _step_seed(seed, k))
    if store:
      lambdas = lambdas.write(k, params)
    if store_gradients:
      gradients = gradients.write(k, gradient)
    params, velocity = _momentum_step(params, velocity, gradient, alpha, settings, num_groups)
    return k + 1, params, velocity, losses.write(k, step_losses), lambdas, gradients

  def array(shape_tail):
    return tf.TensorArray(params.dtype, size=num_steps, element_shape=shape_tail)

  init = (tf.constant(0), params, tf.zeros_like(params), array(tf.TensorShape([None])),
          array(params.shape), array(params.shape))
  _, params, _, losses, lambdas, gradients = tf.while_loop(
      lambda k, *_: k < num_steps, body, init, parallel_iterations=1)

  def no_losses():
    # An empty TensorArray stacks only with a static element shape: K = 0 gives zeros [0, B].
    return tf.zeros([0, batch], params.dtype)

  if tf.is_tensor(num_steps):
    losses = tf.cond(num_steps > 0, losses.stack, no_losses)
  else:
    losses = losses.stack() if num_steps else no_losses()
  losses = tf.reshape(losses, [num_steps, batch])
  stored = (lambdas, gradients) if store else None
  return params, losses, stored


def unrolled_refine(params, loss_fn, settings, num_groups, *, seed):
  """The same K steps in a Python loop, differentiable by an enclosing tape (exact; memory grows with K).

  Returns:
    params: lambda_K `[B, P]`, a differentiable function of `params` and the decoder.
    losses: `[K, B]`.
  """
  alpha = step_sizes(settings, num_groups, params.shape[-1] // num_groups, params.dtype)
  velocity = tf.zeros_like(params)
  losses = []
  for k in range(settings.num_steps):
    # Inside an enclosing tape, the inner gradient is recorded and so differentiated.
    step_losses, gradient = value_and_gradient(loss_fn, params, _step_seed(seed, k))
    params, velocity = _momentum_step(params, velocity, gradient, alpha, settings, num_groups)
    losses.append(step_losses)
  losses = tf.stack(losses) if losses else tf.zeros([0, tf.shape(params)[0]], params.dtype)
  return params, losses


def _dense(gradients, variables):
  return [tf.zeros(v.shape, v.dtype) if g is None else tf.convert_to_tensor(g)
          for g, v in zip(gradients, variables)]


def hvp_method(settings):
  """The Hessian-vector product the settings' backward mode uses."""
  return "finite_difference" if settings.backward == "finite_difference" else settings.hvp


def hessian_vector_product(loss_fn, params, vector, variables, settings, num_groups, *, seed,
                           gradient=None):
  """(H_lambda,lambda u', H_theta,lambda u') of sum_b F_b at `params`, u' = J_clip(g)^T u.

  ```none
  u' = J_clip(g)^T u   (= u without clipping; J_clip is symmetric)
  returns  d/dlambda <g(lambda), u'>,  d/dtheta <g(lambda), u'>     g = grad_lambda sum_b F_b
  ```

  Methods (`hvp_method(settings)`): `backward_over_backward` (a tape over the
  gradient tape, differentiating <clip(g), u> directly), `forward_over_backward`
  (`tf.autodiff.ForwardAccumulator` along u' around the gradient tape) and
  `finite_difference` ((grad(lambda + r u') - grad(lambda)) / r with the same noise).

  Args:
    loss_fn: `(params, seed) -> [B]`.
    params: lambda_k `[B, P]`.
    vector: u `[B, P]` (treated as a constant).
    variables: theta, the decoder variables.
    settings: an `SVISettings`.
    num_groups: G.
    seed: the step's stateless seed (the noise of the forward step).
    gradient: g_k `[B, P]` if known (saves a gradient evaluation when the clip
      Jacobian must be applied before the product).

  Returns:
    (hvp_params `[B, P]`, list of `[*theta_i.shape]`).
  """
  vector = tf.stop_gradient(vector)
  method = hvp_method(settings)
  variables = list(variables)

  def clipped(g):
    return clip_gradient(g, num_groups, settings.clip_norm, settings.clip_scope)

  def gradients_at(point):
    with tf.GradientTape() as tape:
      tape.watch(point)
      loss = tf.reduce_sum(loss_fn(point, seed))
    return _dense(tape.gradient(loss, [point] + variables), [point] + variables)

  if method == "backward_over_backward":
    with tf.GradientTape() as outer:
      outer.watch(params)
      with tf.GradientTape(watch_accessed_variables=False) as inner:
        inner.watch(params)
        loss = tf.reduce_sum(loss_fn(params, seed))
      projection = tf.reduce_sum(clipped(inner.gradient(loss, params)) * vector)
    return _split(_dense(outer.gradient(projection, [params] + variables), [params] + variables))

  direction = vector
  if settings.clip_norm:
    if gradient is None:
      _, gradient = value_and_gradient(loss_fn, params, seed)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(gradient)
      clipped_gradient = clipped(gradient)
    direction = tape.gradient(clipped_gradient, gradient, output_gradients=vector)

  if method == "finite_difference":
    epsilon = settings.fd_epsilon
    perturbed, base = gradients_at(params + epsilon * direction), gradients_at(params)
    return _split([(a - b) / epsilon for a, b in zip(perturbed, base)])

  with tf.autodiff.ForwardAccumulator(params, direction) as accumulator:
    gradients = gradients_at(params)
  return _split(_dense([accumulator.jvp(g) for g in gradients], [params] + variables))


def _split(values):
  return values[0], values[1:]


def _clip_joint(tensors, clip_norm):
  if not clip_norm:
    return tensors
  return tf.clip_by_global_norm(tensors, clip_norm)[0]


def reverse_sweep(params_bar, stored, loss_fn, variables, settings, num_groups, *, seed):
  """The adjoint of `refine`: dL/dlambda_0 and the decoder's gradient through the K steps.

  Each step's gradient is recomputed at the stored lambda_k with its replayed
  noise; inside a `tf.function` each recomputation waits for the incoming adjoint
  (control dependency, one iteration at a time), so only one step's activations
  live at a time.

  Args:
    params_bar: lambda-bar_K = dL/dlambda_K `[B, P]`.
    stored: (lambdas, gradients) `TensorArray`s from `refine(..., store=True)`.
    loss_fn, settings, num_groups, seed: as given to `refine`.
    variables: theta, the decoder variables to differentiate.

  Returns:
    params_bar_0: dL/dlambda_0 `[B, P]`.
    variable_bars: list, the contribution sum_k -H_theta,lambda u_k per variable.
  """
  lambdas, gradients = stored
  num_steps = lambdas.size()
  alpha = step_sizes(settings, num_groups, params_bar.shape[-1] // num_groups, params_bar.dtype)
  use_stored_gradient = _needs_stored_gradient(settings)

  def body(k, params_bar, velocity_bar, variable_bars):
    velocity_bar = velocity_bar + alpha * params_bar
    with tf.control_dependencies([velocity_bar]):
      params_k = tf.identity(lambdas.read(k))
      gradient_k = tf.identity(gradients.read(k)) if use_stored_gradient else None
    hvp_params, hvp_variables = hessian_vector_product(
        loss_fn, params_k, velocity_bar, variables, settings, num_groups,
        seed=_step_seed(seed, k), gradient=gradient_k)
    hvp_variables = _clip_joint(hvp_variables, settings.adjoint_clip_norm)
    params_bar = params_bar - hvp_params
    if settings.adjoint_clip_norm:
      params_bar = _clip_joint([params_bar], settings.adjoint_clip_norm)[0]
    variable_bars = [total - h for total, h in zip(variable_bars, hvp_variables)]
    return k - 1, params_bar, settings.momentum * velocity_bar, variable_bars

  init = (num_steps - 1, params_bar, tf.zeros_like(params_bar),
          [tf.zeros(v.shape, v.dtype) for v in variables])
  _, params_bar, _, variable_bars = tf.while_loop(
      lambda k, *_: k >= 0, body, init, parallel_iterations=1)
  return params_bar, variable_bars
