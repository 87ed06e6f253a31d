"""Builds aiotrace's optional C speedups; the package works without them.

The metadata is in pyproject.toml. A machine without a C compiler gets a
warning and the pure-Python hooks.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aiotrace._speedups",
            ["aiotrace/_speedups.c"],
            optional=True,
        )
    ]
)
