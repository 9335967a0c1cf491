"""efficientscn: low-memory two-stage multi-organ CT segmentation (liver, kidney, spleen, pancreas).

A tested reimplementation of FLARE21-EfficientSCN: a localization U-Net at 6 mm finds the organs, a
SpatialConfiguration-Net segments them at 2 mm, and the label lands on the input CT's exact grid.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("efficientscn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
