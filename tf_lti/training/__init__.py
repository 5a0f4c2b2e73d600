"""Training: the `vae` model, `builders`, `optimizers`, `distribute`, `faults`, `workdir`, `loop`.

May import every library package except experiments. This `__init__` imports
nothing, so `training.faults` stays free of TensorFlow for the command-line
binaries.
"""
