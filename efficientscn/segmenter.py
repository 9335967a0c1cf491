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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from efficientscn.imaging.arrays import ct_from_array
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.imaging.read import as_int16_ct
from efficientscn.infer.graphs import without_graph_optimisation
from efficientscn.infer.importers import ImportContext, import_foreign
from efficientscn.infer.models import Network, load_network, select_device
from efficientscn.infer.pipeline import InferenceConfig, Pipeline, Segmentation, check_processable
from efficientscn.infer.utils_module import load_utils
from efficientscn.model.folder import ModelsFolder
from efficientscn.model.precision import inference_precision
from efficientscn.model.specs import STAGE_NAMES, StageName

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
        folders = ModelsFolder(self.models).stage_folders()
        if import_originals:  # through the importers the package declares (infer.importers)
            context = ImportContext(self.device, self.precision, pipeline_utils, self.config, probe)
            folders = import_foreign(folders, context)
        device, precision, slabs = self.device, self.precision, self.config.slab_budget_bytes
        networks = {stage: load_network(folders[stage], stage, device, precision, slabs) for stage in STAGE_NAMES}
        _warn_of_demonstration_models(self.models, networks.values())
        return Pipeline(networks["localization"], networks["segmentation"], pipeline_utils, self.config)

    @property
    def demonstration(self) -> str | None:
        """What the demonstration models among the loaded ones are (their exports' note), or None when none is."""
        return _demonstration_note(self.networks.values())

    @property
    def networks(self) -> dict[StageName, Network]:
        """The loaded network of each stage."""
        return {"localization": self.pipeline.localization, "segmentation": self.pipeline.segmentation}

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
        convention. An array may be of any integer or float type and byte order (float16 is taken as float32).
        `name` names the CT in messages. Raises `InputError` for a CT `efficientscn predict` cannot segment (not 3-D,
        a label map, too small or too large, no organ found) and for an array or geometry that cannot be a CT's
        (boolean, complex or object values; spacing, origin or direction not 3, 3 and 9 finite numbers, spacing not
        positive, direction not orthonormal); `ValueError` for an array without spacing or an image given with one.
        Predict's plausibility checks of the intensities (`plausibility.check_intensities`) are not run.
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

    def segment_canonical(self, ct: CanonicalCT, *, gate: Callable[[CanonicalCT], None] | None = None) -> Segmentation:
        """The label of a CT on the processing grid, with the seconds and sizes of its steps.

        InputError for a CT the networks cannot take (`pipeline.check_processable`); `gate` (predict's plausibility
        checks) is then called with a CT they can take, before they run, and may refuse it too.
        """
        check_processable(ct.array_zyx.shape, ct.spacing_zyx, self.config)
        if gate is not None:
            gate(ct)
        with self.running():
            return self.pipeline.segment(ct.array_zyx, ct.spacing_zyx)

    @contextmanager
    def running(self) -> Iterator[None]:
        """The block in which the pipeline runs: without Grappler on the CPU, where the package's frozen graphs were
        optimised when frozen (a saved utils module was not: it keeps Grappler)."""
        with without_graph_optimisation(self.device if self.utils_path is None else "none"):
            yield


def _demonstration_note(networks: Iterable[Network]) -> str | None:
    notes = sorted({network.demonstration for network in networks if network.demonstration})
    return "; ".join(notes) if notes else None


def _warn_of_demonstration_models(models: Path, networks: Iterable[Network]) -> None:
    """One warning when a network is a demonstration model, as its export says: its labels look plausible and are
    not to be relied on."""
    note = _demonstration_note(networks)
    if note:
        logger.warning(
            "%s: %s. For real segmentation, import the original's FLARE21 models (efficientscn import-original) or "
            "train on FLARE21 (README: Workflow) and give --models",
            models,
            note,
        )


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
    if spacing is None:
        raise ValueError(f"{name}: a NumPy array needs its spacing (x, y, z mm)")
    return ct_from_array(image, spacing, origin, direction, name)
