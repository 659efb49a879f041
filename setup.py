"""Builds the native agent spawner (pycontain/actuate/_spawn.c); everything
else is in pyproject.toml. `optional`: without a C compiler or Python's
headers the install still succeeds and pycontain starts agents through
subprocess (actuate/spawn.py says which path is in use)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pycontain.actuate._spawn", ["pycontain/actuate/_spawn.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"])])
