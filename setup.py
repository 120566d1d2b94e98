"""Packaging for tfmec."""
from setuptools import find_packages, setup

setup(
    name="tfmec",
    version="0.1.0",
    description="Compress click-through-rate models in TensorFlow/Keras: MEC product-quantised embeddings and AFM low-rank layers.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["tfmec", "tfmec.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "numpy>=1.26",
        "pyarrow>=15",
        "tqdm>=4.60",
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": ["pytest>=8", "tf-keras>=2.21,<2.22", "scipy>=1.11", "hypothesis>=6.100",
                 "tensorflow-recommenders==0.7.7"],
        "onnx": ["tf2onnx>=1.17", "onnxruntime>=1.18"],
        "tune": ["keras-tuner>=1.4.7", "tensorboard>=2.20", "scikit-learn>=1.3", "scipy>=1.11"],
        "tfrs": ["tensorflow-recommenders>=0.7.3", "tf-keras>=2.21,<2.22"],
    },
    entry_points={"console_scripts": ["tfmec=tfmec.cli:main"]},
)
