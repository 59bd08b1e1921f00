"""imgsearch: find the source of a cropped or degraded image in a watched folder."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("imgsearch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
