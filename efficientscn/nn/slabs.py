"""Exact slab-wise inference of a U-Net's full-resolution level: the whole network's numbers in a fraction of its
memory.

At level 0 of a U-Net every tensor has the input's full size (at the SCN's largest input, 160 x 128 x 160 voxels
of 32 channels, 210 MB each in bfloat16), and the expanding block holds the skip, the upsampled deeper output and
their concatenation at once. Every layer there is local along z: 3 x 3 x 3 convolutions, voxel-wise activations,
the 2 x 2 x 2 pooling and the x2 upsampling. So level 0 can run on slabs of z-slices, each with a halo of
neighbouring slices, and give the whole network's values, while the deeper levels, an eighth of the voxels and
less, run whole:

1. the contracting block on each slab (plus its halo), keeping the slab's skip and pooling it;
2. the pooled slabs, put together, through the deeper levels (`UNet3D.from_level`), or their own level by slabs;
3. the expanding block on each slab: the skip with its neighbours' edge slices, the deeper output upsampled around
   the slab, their concatenation, the block's convolutions, then a per-slab `tail` (the network's head), whose
   outputs are collected slab by slab.

Halos come from the layers (`LevelHalos.of`): a convolution reaches (kernel - 1) / 2 slices to each side, an
upsampling its kernel's support in deeper slices. Slab bounds are multiples of the pooling factor, so every slab
pools on the network's own grid. Each of a slab's convolutions is the layer itself on the slab's window of slices,
after which the slices spoilt by its zero padding at a window end inside the volume are cut off: every slice kept
is computed by the same operation on the same neighbourhood as in the whole network, and the results are the
whole network's bit for bit (in float32 and bfloat16 on this project's CPU; a test checks it). Training never takes
this path: nothing here has gradients or dropout, and the slabs run one after the other (`parallel_iterations=1`),
since bounded memory is the point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf

from efficientscn.nn.unet import UNet3D

VOXELWISE_LAYERS = (keras.layers.LeakyReLU, keras.layers.ReLU, keras.layers.Activation, keras.layers.Dropout)
"""Layers whose output voxel depends on the same input voxel only: no halo (dropout is the identity here)."""

LEVELS_BY_SLABS = 2
"""U-Net levels run by slabs by default: level 0 and level 1 (an eighth of the voxels, but its skip and expanding
block at once still as large as a fifth of level 0's); the deeper ones run whole."""


def slab_levels(unet: UNet3D, wanted: int = LEVELS_BY_SLABS) -> int:
    """How many of `unet`'s upper levels run by slabs: `wanted`, but never its deepest level, which runs whole (a
    two-level U-Net runs its level 0 by slabs only)."""
    return max(1, min(wanted, unet.levels - 1))


SLAB_FEATURE_MAPS = 4
"""Full-resolution feature maps of the U-Net's width a slab holds per slice at its peak (the skip, the upsampled
deeper output and their two-wide concatenation): what `slabs_for_budget` charges the budget per slice."""

Tail = Callable[[tf.Tensor], Sequence[tf.Tensor]]
"""What becomes of a slab of the U-Net's output (N, d, H, W, C): tensors with the slab's d slices on axis 0."""


def block_reach(block: Sequence[keras.layers.Layer]) -> int:
    """Slices to each side along z that a block's output voxel depends on: the sum over its convolutions of
    (kernel - 1) / 2 times the dilation. ValueError for a layer whose reach cannot be told this way."""
    reach = 0
    for layer in block:
        if isinstance(layer, keras.layers.Conv3D):
            if layer.padding != "same" or tuple(layer.strides) != (1, 1, 1) or layer.kernel_size[0] % 2 == 0:
                raise ValueError(f"{layer.name}: slabs need stride-1 'same' convolutions of odd size")
            reach += (layer.kernel_size[0] - 1) // 2 * layer.dilation_rate[0]
        elif not isinstance(layer, VOXELWISE_LAYERS):
            raise ValueError(f"{layer.name}: {type(layer).__name__} has no known reach along z")
    return reach


@dataclass(frozen=True)
class LevelHalos:
    """What a U-Net level's slab reads beyond its own slices, derived from the level's layers."""

    contracting: int
    """Input slices to each side the contracting block reads."""
    expanding: int
    """Slices of the concatenation (skip and upsampled deeper output) to each side the expanding block reads."""
    upsampling: int
    """Deeper-level slices to each side the upsampling reads beyond those under its output (its kernel's support)."""
    factor: int
    """The pooling and upsampling factor between this level and the next."""

    @classmethod
    def of(cls, unet: UNet3D, level: int) -> LevelHalos:
        pool = unet.downsample.pool_size[0]
        if pool != unet.downsample.strides[0] or unet.upsample.factor != pool:
            raise ValueError(f"{unet.name}: slabs need pooling and upsampling by the same factor")
        return cls(
            contracting=block_reach(unet.contracting[level]),
            expanding=block_reach(unet.expanding[level]),
            upsampling=unet.upsample.support,
            factor=pool,
        )

    def shortened(self, by: int = 1) -> LevelHalos:
        """These halos `by` slices too short everywhere (for the test that a short halo breaks equality)."""
        return LevelHalos(
            max(self.contracting - by, 0), max(self.expanding - by, 0), max(self.upsampling - by, 0), self.factor
        )


class Slabs:
    """A z-axis of `size` slices cut into slabs of `depth` (the last one may be shorter), in graph tensors."""

    def __init__(self, size: tf.Tensor, depth: tf.Tensor | int) -> None:
        self.size = tf.cast(size, tf.int32)
        self.depth = tf.cast(depth, tf.int32)
        self.count = (self.size + self.depth - 1) // self.depth

    def bounds(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Slab `index`'s slices begin..end-1."""
        begin = index * self.depth
        return begin, tf.minimum(begin + self.depth, self.size)

    def scaled(self, factor: int) -> Slabs:
        """The same slabs one pooling down: `factor` times fewer slices (size and depth are multiples of it)."""
        return Slabs(self.size // factor, self.depth // factor)

    def map(
        self, function: Callable[[tf.Tensor], Sequence[tf.Tensor]], dtypes: Sequence[tf.DType]
    ) -> list[tf.TensorArray]:
        """`function(index)` for every slab, one after the other; its outputs (of `dtypes`) collected per slab."""
        arrays = [tf.TensorArray(dtype, size=self.count, infer_shape=False, clear_after_read=False) for dtype in dtypes]

        def step(index: tf.Tensor, *arrays: tf.TensorArray) -> tuple:
            outputs = function(index)
            return (index + 1, *(array.write(index, output) for array, output in zip(arrays, outputs, strict=True)))

        _, *arrays = tf.while_loop(
            lambda index, *_: index < self.count, step, (tf.constant(0), *arrays), parallel_iterations=1
        )
        return arrays


def _block_on_window(block: Sequence[keras.layers.Layer], x: tf.Tensor, at_start: tf.Tensor, at_end: tf.Tensor):
    """A U-Net block on a window of slices: each convolution is the layer itself ('same'), after which the slices
    its zero padding spoilt at a window end inside the volume (not `at_start` / `at_end` of it) are cut off. So
    every slice kept is computed by the whole network's own operation on the same neighbourhood, bit for bit."""
    for layer in block:
        if isinstance(layer, keras.layers.Dropout):  # the identity at inference
            continue
        x = layer(x)
        if isinstance(layer, keras.layers.Conv3D):
            reach = block_reach([layer])
            x = x[:, tf.where(at_start, 0, reach) : tf.shape(x)[1] - tf.where(at_end, 0, reach)]
    return x


def _block_slices(
    block: Sequence[keras.layers.Layer],
    halo: int,
    window: tf.Tensor,
    window_begin: tf.Tensor,
    window_end: tf.Tensor,
    size: tf.Tensor,
    begin: tf.Tensor,
    end: tf.Tensor,
) -> tf.Tensor:
    """Slices begin..end-1 of `block`'s output, from its input's slices window_begin..window_end-1 (`window`):
    begin - `halo` .. end + `halo`, clipped to the volume's `size` slices.

    A `halo` shorter than the block's reach (only the short-halo test gives one) is made up with zero slices, as a
    naive slab would see them: the result then differs from the whole network's near the slab's ends.
    """
    reach = block_reach(block)
    if halo < reach:
        missing_before = tf.where(window_begin > 0, reach - (begin - window_begin), 0)
        missing_after = tf.where(window_end < size, reach - (window_end - end), 0)
        window = tf.pad(window, [[0, 0], [missing_before, missing_after], [0, 0], [0, 0], [0, 0]])
    output = _block_on_window(block, window, tf.equal(window_begin, 0), tf.equal(window_end, size))
    covered_begin = tf.where(window_begin > 0, begin, 0)  # the first slice `output` holds
    return output[:, begin - covered_begin : end - covered_begin]


def upsampled_slices(
    upsample: keras.layers.Layer, halo: int, deeper: tf.Tensor, begin: tf.Tensor, end: tf.Tensor
) -> tf.Tensor:
    """Slices begin..end-1 of `upsample(deeper)`, upsampling only the deeper slices under them plus `halo` (the
    kernel's support); its edge replication is then wrong only outside begin..end-1, except at the volume's ends,
    where it is the layer's own."""
    factor = upsample.factor
    deeper_size = tf.shape(deeper)[1]
    first = tf.maximum(begin // factor - halo, 0)
    last = tf.minimum((end + factor - 1) // factor + halo, deeper_size)
    upsampled = upsample(deeper[:, first:last])
    return upsampled[:, begin - first * factor : end - first * factor]


def _slices_of_slabs(slabs_array: tf.TensorArray, slabs: Slabs, index: tf.Tensor, begin, end) -> tf.Tensor:
    """Slices begin..end-1 of a volume kept as slabs (N, d, ...) in `slabs_array`, reaching at most into the slabs
    before and after slab `index` (the halo is at most a slab deep)."""
    slab_begin, slab_end = slabs.bounds(index)
    before = slabs_array.read(tf.maximum(index - 1, 0))
    after = slabs_array.read(tf.minimum(index + 1, slabs.count - 1))
    return tf.concat(
        [
            before[:, tf.shape(before)[1] - (slab_begin - begin) :],
            slabs_array.read(index),
            after[:, : end - slab_end],
        ],
        axis=1,
    )


def unet_level_by_slabs(
    unet: UNet3D,
    inputs: tf.Tensor,
    slabs: Slabs,
    tail: Tail,
    tail_dtypes: Sequence[tf.DType],
    *,
    level: int = 0,
    levels_by_slabs: int = 1,
    halos: Sequence[LevelHalos] | None = None,
) -> list[tf.TensorArray]:
    """`tail` of slabs of `unet`'s output from level `level` on, given that level's input (N, D, H, W, C) in the
    compute dtype; per tail output, a TensorArray of its slab results (slab i at index i).

    Levels `level` .. `level + levels_by_slabs - 1` run by slabs, the deeper ones whole. `slabs` cuts this level's D
    slices; its depth must be a multiple of the pooling factor to the power `levels_by_slabs` and at least the
    expanding halo. `halos` (default: `LevelHalos.of` each slabbed level) exist to be shortened by a test.
    """
    halos = list(halos or [LevelHalos.of(unet, current) for current in range(level, level + levels_by_slabs)])
    halo = halos[0]
    size = slabs.size
    contracting, expanding = unet.contracting[level], unet.expanding[level]

    def contract(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        begin, end = slabs.bounds(index)
        first, last = tf.maximum(begin - halo.contracting, 0), tf.minimum(end + halo.contracting, size)
        skip = _block_slices(contracting, halo.contracting, inputs[:, first:last], first, last, size, begin, end)
        return skip, slices_first(unet.downsample(skip))

    skips, pooled = slabs.map(contract, [inputs.dtype, inputs.dtype])
    deeper_inputs = joined(pooled, unet.filters)
    if levels_by_slabs > 1:
        deeper_slabs = slabs.scaled(halo.factor)
        (deeper_output,) = unet_level_by_slabs(
            unet,
            deeper_inputs,
            deeper_slabs,
            lambda x: [slices_first(x)],
            [inputs.dtype],
            level=level + 1,
            levels_by_slabs=levels_by_slabs - 1,
            halos=halos[1:],
        )
        deeper = joined(deeper_output, unet.filters)
    else:
        deeper = unet.from_level(deeper_inputs, level + 1)
    del deeper_inputs

    def expand(index: tf.Tensor) -> Sequence[tf.Tensor]:
        begin, end = slabs.bounds(index)
        first, last = tf.maximum(begin - halo.expanding, 0), tf.minimum(end + halo.expanding, size)
        skip = _slices_of_slabs(skips, slabs, index, first, last)
        skip.set_shape([None, None, None, None, unet.filters])
        upsampled = upsampled_slices(unet.upsample, halo.upsampling, deeper, first, last)
        window = unet.concatenate([skip, upsampled])
        return tail(_block_slices(expanding, halo.expanding, window, first, last, size, begin, end))

    return slabs.map(expand, tail_dtypes)


def slices_first(x: tf.Tensor) -> tf.Tensor:
    """(N, d, ...) -> (d, N, ...): a slab with its slices first, as TensorArray.concat joins them."""
    return tf.transpose(x, [1, 0, *range(2, x.shape.rank)])


def joined(slabs_array: tf.TensorArray, channels: int) -> tf.Tensor:
    """The slabs of a TensorArray, each (d, N, H, W, C) with C = `channels`, joined along z: (N, D, H, W, C), its
    channel count known to the graph again (Keras' convolutions take another path when it is not)."""
    volume = tf.transpose(slabs_array.concat(), [1, 0, 2, 3, 4])
    volume.set_shape([None, None, None, None, channels])
    return volume


def slabs_for_budget(unet: UNet3D, inputs: tf.Tensor, budget_bytes: int, multiple: int, levels_by_slabs: int) -> Slabs:
    """Slabs of `inputs` (N, D, H, W, C) for `unet` whose level-0 feature maps (`SLAB_FEATURE_MAPS` per slice, in
    the U-Net's compute dtype) fit `budget_bytes`: a multiple of `multiple` slices, at least the slabbed levels'
    expanding halos deep, at most the whole input (one slab: the whole network's computation)."""
    shape = tf.shape(inputs, out_type=tf.int64)
    itemsize = tf.as_dtype(unet.compute_dtype).size
    slice_bytes = shape[2] * shape[3] * unet.filters * itemsize * SLAB_FEATURE_MAPS
    deepest_halo = max(
        LevelHalos.of(unet, level).expanding * 2**level for level in range(levels_by_slabs)
    )  # a slab must reach no further than its neighbours
    minimum = -(-max(deepest_halo, 1) // multiple) * multiple
    whole = (shape[1] + multiple - 1) // multiple * multiple
    depth = tf.constant(budget_bytes, tf.int64) // slice_bytes // multiple * multiple
    depth = tf.minimum(tf.maximum(depth, minimum), whole)
    return Slabs(shape[1], depth)
