"""Build the example:  python setup.py build_ext --inplace

Cython finds fastloss/kernels.pxd on sys.path; the include path added below also covers an
editable install of fastloss (whose sources are not on sys.path)."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

import fastloss

fastloss_parent = os.path.dirname(os.path.dirname(fastloss.__file__))

setup(
    name="linear_fit",
    ext_modules=cythonize(
        [Extension("linear_fit", ["linear_fit.pyx"])],
        include_path=[fastloss_parent],
        language_level=3,
    ),
)
