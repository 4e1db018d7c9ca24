"""The science of bolab: specs, data model, batched GD training, metrics, baselines, plots.

Pure: no HTTP, no Redis. Everything here returns values.
"""

__version__ = "0.1.0"
