"""musa-console: the musa-ops desktop console (PySide6 + pyqtgraph)."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("musa-ops")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
