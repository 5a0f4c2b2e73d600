"""Generative models p(x, z): `dlgm` (`DLGM`, the deep latent Gaussian model), `pixelcnn`, `lstm`.

`base` holds the abstract `GenerativeModel` they subclass (the contract that
objectives, inference and evaluation use) and the N(0, I) prior, `layers` the
weight-holding Keras layers, `likelihoods` the observation models and their
registry by name, `network` (`from_network`) a model around any Keras
network, and `precision` the dtype policies of a model's networks (used by
inference and training too). May import config, distributions, data (token ids) and saving, never
posteriors' families, objectives or inference.

The names below are the Python API's (`tf_lti.models.DLGM`, ...).
"""

from tf_lti.models.base import GenerativeModel
from tf_lti.models.dlgm import DLGM
from tf_lti.models.likelihoods import ParameterHead
from tf_lti.models.likelihoods import register_likelihood
from tf_lti.models.network import NetworkDecoder
from tf_lti.models.network import from_network
from tf_lti.models import precision

__all__ = ["DLGM", "GenerativeModel", "NetworkDecoder", "ParameterHead", "from_network",
           "precision", "register_likelihood"]
