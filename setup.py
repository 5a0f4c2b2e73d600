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

# The repository's binary folders install under distinct names: a top-level `trainers` or
# `export` in site-packages would clash with a user's own module of that name. Run from the
# repository root they keep their folder names (`python -m trainers.train`); their modules
# import each other only relatively.
FOLDER_PACKAGES = {"tf_lti_trainers": "trainers", "tf_lti_export": "export"}

setuptools.setup(
    name="tf_lti",
    version="0.1.0",
    description=(
        "Learning to infer in TensorFlow: amortized, iterative and semi-amortized "
        "inference for deep latent-variable models."
    ),
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["tf_lti", "tf_lti.*"]) + list(FOLDER_PACKAGES),
    package_dir=FOLDER_PACKAGES,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=8", "pytest-xdist==3.8.0"]},
    entry_points={
        "console_scripts": [
            "tf-lti-train=tf_lti_trainers.train:run",
            "tf-lti-evaluate=tf_lti_trainers.evaluate:run",
            "tf-lti-benchmark=tf_lti_trainers.benchmark:run",
            "tf-lti-analyze=tf_lti_trainers.analyze:run",
            "tf-lti-impute=tf_lti_trainers.impute:run",
            "tf-lti-sweep=tf_lti_trainers.sweep:run",
            "tf-lti-oracle=tf_lti_trainers.oracle:run",
            "tf-lti-reproduce=tf_lti_trainers.reproduce:run",
            "tf-lti-soak=tf_lti_trainers.soak:run",
            "tf-lti-export=tf_lti_export.export:run",
        ]
    },
)
