"""Generative models p(x, z): `dlgm` (the deep latent Gaussian model), `pixelcnn`, `lstm`.

`base` holds the prior helpers, `layers` the weight-holding Keras layers and
`likelihoods` the observation models. May import config, distributions and
data (token ids), never posteriors' families, objectives or inference.
"""
