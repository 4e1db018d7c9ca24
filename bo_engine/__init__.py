"""The science of bolab: specs, data model, batched GD training, metrics, baselines, plots.

Pure: no HTTP, no Redis. Everything here returns values.
"""

__version__ = "0.1.0"

# The version of every number a run reports. Bump it with any change that alters a reported
# number (even by rounding): run keys include it, so cached runs of another version are never
# served.
NUMERICS_VERSION = 3
