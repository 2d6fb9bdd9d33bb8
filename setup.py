"""Compatibility entry point: all metadata lives in pyproject.toml.

`pip install -e ".[test]"` (or `python -m build`) reads pyproject.toml;
this file only lets tools that still call `setup.py` find the project.
"""

from setuptools import setup

setup()
