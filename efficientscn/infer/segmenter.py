"""The Python interface: `Segmenter` loads both networks once and segments CT images in memory, no file written.

    import SimpleITK as sitk
    from efficientscn import Segmenter

    segmenter = Segmenter("submitted_saved_models")  # device=None (a GPU if seen), precision="auto"
    label = segmenter.segment(sitk.ReadImage("ct.nii.gz"))  # uint8, on the CT's exact grid

`efficientscn predict` segments each case through this same object (`segment_canonical`, after reading).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.read import as_int16_ct
from efficientscn.infer.graphs import without_graph_optimisation
from efficientscn.infer.models import load_network, models_subfolder, select_device
from efficientscn.infer.original import imported_folders, probe_from, probe_or_phantom
from efficientscn.infer.pipeline import InferenceConfig, Pipeline, Segmentation
from efficientscn.infer.utils_module import load_utils
from efficientscn.model.precision import inference_precision
from efficientscn.model.specs import STAGE_NAMES

logger = logging.getLogger(__name__)


class Segmenter:
    """Both networks of a models folder and the pre/post-processing, loaded once for a device and precision."""

    def __init__(
        self,
        models: str | os.PathLike[str],
        *,
        device: str | None = None,
        precision: str = "auto",
        utils: str | os.PathLike[str] | None = None,
        import_originals: bool = True,
        config: InferenceConfig | None = None,
        probe: str | os.PathLike[str] | None = None,
    ) -> None:
        """Load `models` (a folder with localization/ and segmentation/ SavedModels).

        `device`: "cpu", "gpu", or None for a GPU when TensorFlow sees one. `precision`: "auto" (float16 on a GPU,
        bfloat16 on a CPU with bfloat16 instructions, float32 otherwise) or one of them. `utils`: a traced
        tf_utils_module to run the pre/post-processing instead of the package's functions. Networks in the
        original's format are imported once into the cache and checked on `probe` (a CT file or DICOM folder; the
        package's phantom if None), unless `import_originals` is off (they then run through their own graphs).
        `config`: how scans are treated (spacing fallback, voxel limit; see `InferenceConfig`).
        """
        self.device = select_device(device)
        self.precision = inference_precision(self.device, precision)
        self.config = config or InferenceConfig()
        self.models = Path(models)
        self.utils_path = None if utils is None else Path(utils)
        with self.running():  # an import's check runs the pipeline
            self.pipeline = self._load(import_originals, None if probe is None else Path(probe))

    def _load(self, import_originals: bool, probe: Path | None) -> Pipeline:
        pipeline_utils = load_utils(self.utils_path, self.device)
        folders = {stage: models_subfolder(self.models, stage) for stage in STAGE_NAMES}
        if import_originals:
            probe_ct = partial(probe_from, None) if probe is None else partial(probe_or_phantom, probe, self.config)
            folders = imported_folders(
                folders,
                probe=probe_ct,
                device=self.device,
                precision=self.precision,
                utils=pipeline_utils,
                config=self.config,
            )
        device, precision, slabs = self.device, self.precision, self.config.slab_budget_bytes
        networks = {stage: load_network(folders[stage], stage, device, precision, slabs) for stage in STAGE_NAMES}
        return Pipeline(networks["localization"], networks["segmentation"], pipeline_utils, self.config)

    def segment(
        self,
        image: sitk.Image | np.ndarray,
        *,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        direction: Sequence[float] | None = None,
        name: str = "image",
    ) -> sitk.Image:
        """The uint8 label map (0 background, 1 liver, 2 kidney, 3 spleen, 4 pancreas) of a CT in memory, on its
        exact grid (size, spacing, origin, direction).

        `image`: a SimpleITK image (any orientation; integer or float HU, rounded and clipped to int16 as files
        are), or a NumPy array indexed (z, y, x), as `sitk.GetArrayFromImage` gives, with `spacing` (x, y, z mm,
        required), `origin` (x, y, z mm, default 0) and `direction` (9 cosines, default identity) in SimpleITK's
        convention. `name` names the CT in messages. Raises `InputError` for a CT `efficientscn predict` cannot
        segment (not 3-D, a label map, too small or too large, no organ found); predict's plausibility checks of the
        intensities (`plausibility.check_intensities`) are not run.
        """
        ct = self.canonical(image, spacing=spacing, origin=origin, direction=direction, name=name)
        return ct.restore(self.segment_canonical(ct).label)

    def canonical(
        self,
        image: sitk.Image | np.ndarray,
        *,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        direction: Sequence[float] | None = None,
        name: str = "image",
    ) -> CanonicalCT:
        """A CT in memory (see `segment`) on the processing grid."""
        ct = as_int16_ct(_as_sitk(image, spacing, origin, direction, name), name)
        return CanonicalCT.from_image(
            ct, name, max_voxels=self.config.max_voxels, spacing_fallback=self.config.spacing_fallback
        )

    def segment_canonical(self, ct: CanonicalCT) -> Segmentation:
        """The label of a CT on the processing grid, with the seconds and sizes of its steps."""
        with self.running():
            return self.pipeline.segment(ct.array_zyx, ct.spacing_zyx)

    @contextmanager
    def running(self) -> Iterator[None]:
        """The block in which the pipeline runs: without Grappler on the CPU, where the package's frozen graphs were
        optimised when frozen (a saved utils module was not: it keeps Grappler)."""
        with without_graph_optimisation(self.device if self.utils_path is None else "none"):
            yield


def _as_sitk(
    image: sitk.Image | np.ndarray,
    spacing: Sequence[float] | None,
    origin: Sequence[float] | None,
    direction: Sequence[float] | None,
    name: str,
) -> sitk.Image:
    """`image` as a SimpleITK image: an image as it is (no geometry may be given with it), an array with its
    geometry."""
    if isinstance(image, sitk.Image):
        if spacing is not None or origin is not None or direction is not None:
            raise ValueError(f"{name}: a SimpleITK image carries its own geometry; give spacing etc. with arrays only")
        return image
    array = np.asarray(image)
    if array.ndim != 3:
        raise InputError(f"{name}: {array.ndim}-D array {array.shape}; expected a 3-D CT indexed (z, y, x)")
    if spacing is None:
        raise ValueError(f"{name}: a NumPy array needs its spacing (x, y, z mm)")
    converted = sitk.GetImageFromArray(array)
    converted.SetSpacing([float(value) for value in spacing])
    if origin is not None:
        converted.SetOrigin([float(value) for value in origin])
    if direction is not None:
        converted.SetDirection([float(value) for value in direction])
    return converted
