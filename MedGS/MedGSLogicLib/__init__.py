"""Qt-free parts of the MedGS Slicer module: parameters, export to a job folder, the worker
process, loading results as nodes, dependencies.

Everything here imports only `slicer` (MRML), `vtk`, `numpy` and the standard library, so it
runs both inside Slicer and under pytest with the `slicer-core` wheel. Importing this package
also makes the engine package `MedGSLib` importable (see `paths.py`).
"""
from .paths import ensure_engine_importable

ensure_engine_importable()
