"""Packaging details pyproject.toml cannot state: ``configs/`` ships as ``diffjax.configs``.

The bundled configs stay at the top of the source tree (``train.py --config
configs/X.py`` and ``from configs.default import ...`` keep working in a clone)
and install inside the package, where ``dj.train("ddpm_digits:smoke", w)`` and
``train.py --config ddpm_digits`` find them by name from any directory.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["diffjax", "diffjax.*"]) + ["diffjax.configs"],
    package_dir={"diffjax.configs": "configs"},
)
