"""efficientscn: low-memory two-stage multi-organ CT segmentation (liver, kidney, spleen, pancreas).

A tested reimplementation of FLARE21-EfficientSCN: a localization U-Net at 6 mm finds the organs, a
SpatialConfiguration-Net segments them at 2 mm, and the label lands on the input CT's exact grid.
"""

from efficientscn.versions import __version__

__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str) -> object:
    """`efficientscn.Segmenter`, imported on first use: importing the package alone does not load TensorFlow."""
    if name == "Segmenter":
        from efficientscn.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'efficientscn' has no attribute {name!r}")
