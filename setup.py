"""Installs tf_lti: the library, the trainers and the exporter."""

import setuptools

INSTALL_REQUIRES = [
    # tf-keras depends on `tensorflow` (not tensorflow-cpu); TFP needs tf-keras to import.
    "tensorflow==2.21.0",
    "tensorflow-probability==0.25.0",
    "tf-keras==2.21.0",
    "keras==3.15.1",
    "absl-py==2.5.1",
    "tensorflow-datasets==4.9.10",
    "importlib-resources==7.1.0",  # tensorflow-datasets imports it without declaring it
    "tensorboard==2.21.0",  # TF 2.21 no longer pulls it in
    "numpy>=1.26,<3",
    "scipy>=1.11",
    "scikit-learn==1.9.1",  # only for its embedded handwritten-digits data set
    "matplotlib==3.11.2",
]

setuptools.setup(
    name="tf_lti",
    version="0.1.0",
    description=(
        "Learning to infer in TensorFlow: amortized, iterative and semi-amortized "
        "inference for deep latent-variable models."
    ),
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["tf_lti", "tf_lti.*", "trainers", "export"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=8", "pytest-xdist==3.8.0"]},
    entry_points={
        "console_scripts": [
            "tf-lti-train=trainers.train:run",
            "tf-lti-evaluate=trainers.evaluate:run",
            "tf-lti-benchmark=trainers.benchmark:run",
            "tf-lti-analyze=trainers.analyze:run",
            "tf-lti-impute=trainers.impute:run",
            "tf-lti-sweep=trainers.sweep:run",
            "tf-lti-oracle=trainers.oracle:run",
            "tf-lti-soak=trainers.soak:run",
            "tf-lti-export=export.export:run",
        ]
    },
)
