"""Packaging of penalty-tf.

Install for use:          pip install -e ".[cpu]"
Install for development:  pip install -e ".[cpu,test]"
With an NVIDIA GPU:       pip install -e ".[gpu]"

TensorFlow is an extra rather than a hard requirement because it comes in two
distributions (``tensorflow-cpu`` and ``tensorflow[and-cuda]``) that must not be
installed side by side.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """Return ``__version__`` from penalty_tf/__init__.py without importing the package."""
    text = (HERE / "penalty_tf" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("__version__ not found in penalty_tf/__init__.py")
    return match.group(1)


def read_long_description() -> str:
    """Return README.md, or an empty string when it is missing."""
    readme = HERE / "README.md"
    return readme.read_text(encoding="utf-8") if readme.exists() else ""


PACKAGE_ROOTS = ["penalty_tf", "synthetic", "importance_learning", "few_shot", "poisoning",
                 "benchmarks"]

setup(
    name="penalty-tf",
    version=read_version(),
    description=("Bilevel optimization by the penalty method (Mehra & Hamm, ACML 2021) "
                 "in TensorFlow 2 / Keras 3, with the paper's experiments"),
    long_description=read_long_description(),
    long_description_content_type="text/markdown",
    project_urls={"Paper": "https://arxiv.org/abs/2006.03631",
                  "Original code": "https://github.com/hammlab/bilevel-penalty"},
    packages=find_packages(
        include=PACKAGE_ROOTS + [name + ".*" for name in PACKAGE_ROOTS],
        exclude=["tests", "tests.*"],
    ),
    python_requires=">=3.9",
    install_requires=[
        "keras>=3.0",
        "numpy",
        "scipy",
        "h5py",
        "matplotlib",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        "test": ["pytest"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
