"""Generative models p(x, z): `dlgm` (`DLGM`, the deep latent Gaussian model), `pixelcnn`, `lstm`.

`base` holds the abstract `GenerativeModel` they subclass (the contract that
objectives, inference and evaluation use) and the N(0, I) prior, `layers` the
weight-holding Keras layers and `likelihoods` the observation models. May
import config, distributions and data (token ids), never posteriors' families,
objectives or inference.
"""
