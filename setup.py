"""Builds aiotrace's optional C extension; everything else is in pyproject.toml.

The extension (aiotrace/reader/_cdecode.c) speeds up the trace reader. It is
optional: without a C compiler, or if it fails to build, aiotrace installs
without it and the reader runs its pure-Python twin.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aiotrace.reader._cdecode",
            sources=["aiotrace/reader/_cdecode.c"],
            optional=True,
        )
    ]
)
