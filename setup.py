"""Install keras_tricks: `pip install -e ".[test]"` for development."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
DEMO = ["scikit-learn", "matplotlib"]
version = {}
exec((HERE / "keras_tricks" / "version.py").read_text(), version)

setup(
    name="keras_tricks",
    version=version["__version__"],
    description=(
        "Training tricks of the bert4keras / Scientific Spaces lineage "
        "for multi-backend Keras 3."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["keras_tricks", "keras_tricks.*"]),
    python_requires=">=3.10",
    install_requires=[
        "keras>=3.7",
        "numpy",
        # TensorFlow is the default Keras backend; JAX and PyTorch are optional.
        "tensorflow",
    ],
    extras_require={
        "demo": DEMO,
        # Everything the suite needs on all three backends, demo smoke tests
        # included; scipy for the multi-task references. torch==2.13.0 resolves to the CPU build where one is
        # provided locally (as on CI).
        "test": ["pytest", "jax", "torch==2.13.0", "psutil", "scipy", *DEMO],
        "bench": ["psutil"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
