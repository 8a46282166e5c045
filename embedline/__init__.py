"""embedline: preprocess -> chunk -> embed -> dedupe -> upsert (Qdrant), run by Prefect, versioned by DVC.

One distribution, one import name. The source folders stay at the top of the repository (DVC's
``dvc.yaml`` names them as stage deps, Prefect's ``prefect.yaml`` names the flow file) and install
under this package by setuptools' ``package-dir`` mapping (see pyproject.toml):

- :mod:`embedline.tasks` (folder ``tasks/``): the pure core, one package per concern; no Prefect.
- :mod:`embedline.flows` (folder ``flows/``): the Prefect shell (flow, tasks, CLI, serve/deploy).

Layers point down only (flows -> tasks -> config/records); ``tests/unit/test_layers.py`` fails on any
import cycle. ``docs/architecture.md`` is the map.
"""

__version__ = "0.2.0"
