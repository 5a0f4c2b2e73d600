r"""Peer timings for docs/benchmarks.md: a plain PyTorch VAE step, a Pyro SVI step and Pyro's
vectorized importance-sampled log p(x), on the model `tf-lti-benchmark` times by default
(784-512-512-64 Bernoulli VAE, ELU, plain MLP encoder, batch 100, Adam 1e-3).

Not part of the library and not installed: run it with a PyTorch (and Pyro) environment, e.g.

  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch pyro-ppl
  /tmp/torchvenv/bin/python benchmarks/peers.py --mode=torch_step --timed_steps=300
  /tmp/torchvenv/bin/python benchmarks/peers.py --mode=pyro_step --timed_steps=300
  /tmp/torchvenv/bin/python benchmarks/peers.py --mode=pyro_iw --num_samples=5000

Each prints one JSON line (median over the timed steps, after warm-up), like
`tf-lti-benchmark`; `benchmarks/interleave.sh` alternates them with ours.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

D, H, Z = 784, 512, 64


def _networks():
  encoder = nn.Sequential(nn.Linear(D, H), nn.ELU(), nn.Linear(H, H), nn.ELU(), nn.Linear(H, 2 * Z))
  decoder = nn.Sequential(nn.Linear(Z, H), nn.ELU(), nn.Linear(H, H), nn.ELU(), nn.Linear(H, D))
  return encoder, decoder


def _data(batch_size):
  generator = torch.Generator().manual_seed(0)
  return (torch.rand(batch_size, D, generator=generator) < 0.3).float()


def torch_step(batch_size):
  """The plain PyTorch step: reparameterized ELBO, analytic KL, two Adam optimizers."""
  encoder, decoder = _networks()
  optimizers = [torch.optim.Adam(m.parameters(), 1e-3) for m in (encoder, decoder)]
  x = _data(batch_size)

  def step():
    mu, logvar = encoder(x).chunk(2, -1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    rec = -F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
    loss = (kl - rec).mean()
    for optimizer in optimizers:
      optimizer.zero_grad()
    loss.backward()
    for optimizer in optimizers:
      optimizer.step()
  return step


def _pyro_model_and_guide(encoder, decoder):
  import pyro  # pylint: disable=g-import-not-at-top
  import pyro.distributions as dist  # pylint: disable=g-import-not-at-top

  def model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("data", x.shape[0]):
      z = pyro.sample("z", dist.Normal(x.new_zeros(Z), x.new_ones(Z)).to_event(1))
      pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

  def guide(x):
    pyro.module("encoder", encoder)
    with pyro.plate("data", x.shape[0]):
      mu, logvar = encoder(x).chunk(2, -1)
      pyro.sample("z", dist.Normal(mu, torch.exp(0.5 * logvar)).to_event(1))
  return model, guide


def pyro_step(batch_size):
  """Pyro's SVI step on the same model (Trace_ELBO, one particle, Adam 1e-3)."""
  import pyro  # pylint: disable=g-import-not-at-top
  from pyro import infer, optim  # pylint: disable=g-import-not-at-top
  pyro.clear_param_store()
  model, guide = _pyro_model_and_guide(*_networks())
  svi = infer.SVI(model, guide, optim.Adam({"lr": 1e-3}), loss=infer.Trace_ELBO())
  x = _data(batch_size)
  return lambda: svi.step(x)


def pyro_iw(batch_size, num_samples):
  """Pyro's vectorized importance weights: log p(x) of `batch_size` points, all samples at once
  per point (no chunking), no gradients."""
  import pyro  # pylint: disable=g-import-not-at-top
  from pyro.infer import importance  # pylint: disable=g-import-not-at-top
  pyro.clear_param_store()
  model, guide = _pyro_model_and_guide(*_networks())
  x = _data(batch_size)

  def estimate():
    with torch.no_grad():
      for point in x:
        log_weights, _, _ = importance.vectorized_importance_weights(
            model, guide, point[None], num_samples=num_samples, max_plate_nesting=1)
        torch.logsumexp(log_weights, 0)
  return estimate


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mode", choices=("torch_step", "pyro_step", "pyro_iw"), required=True)
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--num_samples", type=int, default=5000)
  parser.add_argument("--eval_points", type=int, default=5)
  parser.add_argument("--timed_steps", type=int, default=300)
  parser.add_argument("--warmup_steps", type=int, default=20)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  if args.mode == "pyro_iw":
    run = pyro_iw(args.eval_points, args.num_samples)
    warmup, timed = 1, max(3, args.timed_steps // 100)
  else:
    run = (torch_step if args.mode == "torch_step" else pyro_step)(args.batch_size)
    warmup, timed = args.warmup_steps, args.timed_steps
  for _ in range(warmup):
    run()
  times = []
  for _ in range(timed):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  result = {"peer": args.mode, "torch": torch.__version__, "threads": args.threads}
  if args.mode == "pyro_iw":
    result.update(ms_per_test_point=1e3 * median / args.eval_points, num_samples=args.num_samples)
  else:
    result.update(step_ms_median=1e3 * median, examples_per_sec=args.batch_size / median)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
