"""Slab-wise inference against the whole networks, with the shipped models, as `predict` runs them (frozen graphs).

On every shared CT, the inputs its pipeline gives the localization network and the SCN; and SCN inputs of the
paper's sizes up to the largest valid one, 160 x 128 x 160 (what a synthetic CT whose organ box reaches it gives:
a shared CT's SCN input resized to that size). In float32 and bfloat16: the largest probability difference and
the label (argmax) agreement are printed, and must stay within docs/fidelity.md #52's figures: float32 at most
1e-5, bfloat16 one float16 step of a probability (2^-11), labels equal on at least 99.999 % of the voxels (measured:
equal bit for bit). A halo one slice short must break it on a real CT.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from efficientscn.errors import InputError
from efficientscn.imaging.canonical import CanonicalCT
from efficientscn.infer import ops
from efficientscn.infer.graphs import without_graph_optimisation
from efficientscn.infer.models import Network, load_network, rebuilt_model
from efficientscn.infer.runtime import SLAB_BUDGET_BYTES
from efficientscn.model.savedmodel import channels_last, read_metadata
from efficientscn.nn.scn import LOCAL_SCOPE, scn_probabilities_by_slabs
from efficientscn.nn.slabs import LevelHalos, slices_first
from efficientscn.segmenter import Segmenter

from helpers import REPO_ROOT, SHARED_CASES, require_shared_data, shared_case

SHIPPED = REPO_ROOT / "submitted_saved_models"
LARGEST_DIFFERENCE = {"float32": 1e-5, "bfloat16": 2.0**-11}
LEAST_LABEL_AGREEMENT = 0.99999
SCN_SIZES = ((64, 64, 96), (96, 128, 160), (128, 128, 160), (160, 128, 160))
"""SCN input sizes (z, y, x) besides the shared CTs' own: up to the largest valid one."""


@pytest.fixture(scope="module")
def network_inputs() -> dict[str, dict[str, tf.Tensor]]:
    """Per shared CT the localization and SCN inputs its pipeline makes (float32 networks, slab-wise), and SCN
    inputs of `SCN_SIZES` resized from ts_example_ct's."""
    require_shared_data()
    segmenter = Segmenter(SHIPPED, device="cpu", precision="float32")
    pipeline, captured = segmenter.pipeline, {}

    def capturing(network: Network) -> Network:
        def run(image: tf.Tensor) -> tf.Tensor:
            captured[network.stage] = image
            return network.run(image)

        return dataclasses.replace(network, run=run)

    pipeline.localization, pipeline.segmentation = capturing(pipeline.localization), capturing(pipeline.segmentation)
    inputs = {}
    for case_id in sorted(SHARED_CASES):
        captured.clear()
        with contextlib.suppress(InputError):  # refused (the 3-slice fixture is too small): nothing to compare
            segmenter.segment_canonical(CanonicalCT.read(shared_case(case_id).image))
        inputs[case_id] = dict(captured)
    assert sum("segmentation" in found for found in inputs.values()) >= len(SHARED_CASES) - 1
    scn_input = inputs["ts_example_ct"]["segmentation"]
    for size in SCN_SIZES:
        image = ops.resize_image(scn_input, tf.constant(size), "linear")
        assert tuple(image.shape[2:]) == size
        inputs[f"SCN input {'x'.join(map(str, size))}"] = {"segmentation": image}
    return inputs


@pytest.mark.slow  # two precisions, both networks whole and by slabs, every shared CT and the largest inputs
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_slab_wise_networks_equal_the_whole_ones(network_inputs: dict, precision: str) -> None:
    figures = []
    with without_graph_optimisation("cpu"):
        for stage in ("localization", "segmentation"):
            whole = load_network(SHIPPED / stage, stage, "cpu", precision, None)
            by_slabs = load_network(SHIPPED / stage, stage, "cpu", precision, SLAB_BUDGET_BYTES)
            for name, inputs in network_inputs.items():
                if stage not in inputs:
                    continue
                expected, found = whole.run(inputs[stage]).numpy(), by_slabs.run(inputs[stage]).numpy()
                assert found.shape == expected.shape and found.dtype == expected.dtype
                if stage == "localization":
                    differing = int(np.count_nonzero(found != expected))
                    figures.append(f"{name} localization {expected.shape[2:]}: {differing} mask voxels differ")
                    assert differing <= (1 - LEAST_LABEL_AGREEMENT) * expected.size
                    continue
                difference = float(np.abs(found.astype(np.float32) - expected.astype(np.float32)).max())
                labels, expected_labels = found.argmax(axis=1), expected.argmax(axis=1)
                differing = int(np.count_nonzero(labels != expected_labels))
                figures.append(
                    f"{name} SCN {expected.shape[2:]}: largest probability difference {difference:.3g}, "
                    f"labels equal on {labels.size - differing} of {labels.size} voxels"
                )
                assert difference <= LARGEST_DIFFERENCE[precision], figures[-1]
                assert differing <= (1 - LEAST_LABEL_AGREEMENT) * labels.size, figures[-1]
    print(f"\n{precision}:\n" + "\n".join(figures))
    assert len(figures) >= 2 * (len(SHARED_CASES) - 1) + len(SCN_SIZES)  # all but the 3-slice CT


@pytest.mark.slow  # the SCN twice on a real CT's input
def test_a_halo_one_slice_short_breaks_equality_on_a_real_ct(network_inputs: dict) -> None:
    """The shipped SCN by slabs of the default budget with its local U-Net's halos each one slice short: its
    probabilities move away from the whole network's on ts_example_ct's real input."""
    folder = SHIPPED / "segmentation"
    model = rebuilt_model("segmentation", folder, read_metadata(folder) or {}, "float32")
    image = network_inputs["ts_example_ct"]["segmentation"]
    unet = model.get_layer(LOCAL_SCOPE)

    def by_slabs(halos: list[LevelHalos] | None) -> np.ndarray:
        @tf.function
        def probabilities(image: tf.Tensor) -> tf.Tensor:
            slabs = scn_probabilities_by_slabs(model, image, SLAB_BUDGET_BYTES, slices_first, tf.float32, halos=halos)
            return tf.transpose(slabs.concat(), [1, 0, 2, 3, 4])

        return probabilities(channels_last(image)).numpy()

    whole = model(channels_last(image), training=False)["probabilities"].numpy()
    assert np.abs(by_slabs(None) - whole).max() <= LARGEST_DIFFERENCE["float32"]
    short = [LevelHalos.of(unet, level).shortened() for level in range(2)]
    assert np.abs(by_slabs(short) - whole).max() > 1e-3
