"""runwatch: alerting for machine-learning training runs tracked in Weights & Biases."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("runwatch")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
