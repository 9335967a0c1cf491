"""Pre- and post-processing of the two-stage inference, with the interface of the original's `tf_utils_module`.

Every function takes and returns what the original's traced functions do: images are channels-first float16
[N, C, D, H, W] tensors, spacings and boxes float32 [3] in z, y, x order (mm), sizes int32 [3], paddings and
croppings int32 [3, 2] (before, after per axis), and the results agree with the original up to float rounding.

Inside, the work is done the way a CPU does it fast and in little memory: float32 arithmetic on channels-last or
plain tensors (the original's channels-first float16 convolutions have no CPU kernels), the segmentation input
smoothed only around the organ box instead of over the whole CT, and the label map upsampled slab by slab so the
five probability channels never exist at the CT's resolution all at once (docs/fidelity.md #29, #30).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from efficientscn.imaging.resample import AIR_HU
from efficientscn.model.contract import INTENSITY_SCALE_HU

CHANNELS_FIRST = "channels_first"
BBOX_MARGIN_MM = 10.0
"""Added on every side of the localization network's foreground box."""
POSTPROCESS_SLAB = 16
"""Output z-slices upsampled at once by `postprocess_for_segmentation`."""

_RESIZE_METHODS = {"area": tf.image.ResizeMethod.AREA, "linear": tf.image.ResizeMethod.BILINEAR}


def _check_channels_first(data_format: str) -> None:
    if data_format != CHANNELS_FIRST:
        raise ValueError(f"only data_format='{CHANNELS_FIRST}' is supported, not {data_format!r}")


def _spatial_size(image: tf.Tensor) -> tf.Tensor:
    """The [D, H, W] size of a [N, C, D, H, W] tensor, int32 [3]."""
    return tf.shape(image, out_type=tf.int32)[2:5]


def _as_float32(value: tf.Tensor | float) -> tf.Tensor:
    return tf.cast(value, tf.float32)


# --- sizes -----------------------------------------------------------------------------------------------------


def size_for_spacing(size: tf.Tensor, spacing: tf.Tensor, new_spacing: tf.Tensor) -> tf.Tensor:
    """The voxel size int32 [3] that covers `size` voxels of `spacing` at `new_spacing`: ceil(size*spacing/new)."""
    return tf.cast(tf.math.ceil(tf.cast(size, tf.float32) * spacing / new_spacing), tf.int32)


def get_valid_size(
    size: tf.Tensor, valid_sizes_z: tf.Tensor, valid_sizes_y: tf.Tensor, valid_sizes_x: tf.Tensor
) -> tf.Tensor:
    """Per axis the smallest valid size strictly greater than `size`, else the last (largest) one; int32 [3].

    The lists pair by position with the z, y, x size (the original calls them x, y, z). Kept as the original
    (docs/fidelity.md #1): "strictly greater", so an exact fit takes the next size, as in training and inference.
    """
    chosen = []
    for axis, valid in enumerate((valid_sizes_z, valid_sizes_y, valid_sizes_x)):
        valid = tf.cast(valid, tf.int32)
        chosen.append(tf.reduce_min(tf.where(valid > size[axis], valid, valid[-1])))
    return tf.stack(chosen)


# --- padding, cropping, intensities ----------------------------------------------------------------------------


def pad_image(
    image: tf.Tensor, paddings: tf.Tensor, pad_value: float = 0, data_format: str = CHANNELS_FIRST
) -> tf.Tensor:
    """`image` padded by `paddings` [3, 2] (voxels before and after each of D, H, W) with a constant."""
    _check_channels_first(data_format)
    full = tf.concat([tf.zeros([2, 2], tf.int32), tf.cast(paddings, tf.int32)], axis=0)
    return tf.pad(image, full, constant_values=tf.cast(pad_value, image.dtype))


def crop_image(image: tf.Tensor, croppings: tf.Tensor, data_format: str = CHANNELS_FIRST) -> tf.Tensor:
    """`image` without `croppings` [3, 2] voxels before and after each of D, H, W."""
    _check_channels_first(data_format)
    croppings = tf.cast(croppings, tf.int32)
    kept = _spatial_size(image) - croppings[:, 0] - croppings[:, 1]
    return tf.slice(image, tf.concat([[0, 0], croppings[:, 0]], 0), tf.concat([[-1, -1], kept], 0))


def center_pad_to_size(
    image: tf.Tensor, size: tf.Tensor, pad_value: float = AIR_HU, data_format: str = CHANNELS_FIRST
) -> tuple[tf.Tensor, tf.Tensor]:
    """`image` padded equally on both sides to `size` (an odd extra voxel goes after); returns (image, paddings)."""
    missing = tf.cast(size, tf.int32) - _spatial_size(image)
    before = missing // 2
    paddings = tf.stack([before, missing - before], axis=1)
    return pad_image(image, paddings, pad_value, data_format), paddings


def intensity_postprocessing_ct(
    image: tf.Tensor,
    shift: float = 0,
    scale: float = 1 / INTENSITY_SCALE_HU,
    clamp_min: float = -1.0,
    clamp_max: float = 1.0,
) -> tf.Tensor:
    """(image + shift) * scale clamped to [clamp_min, clamp_max], in the image's dtype: HU / 2048 in [-1, 1]."""
    values = (tf.cast(image, tf.float32) + shift) * scale
    return tf.cast(tf.clip_by_value(values, clamp_min, clamp_max), image.dtype)


# --- smoothing -------------------------------------------------------------------------------------------------


def gaussian_kernel1d(sigma: tf.Tensor, filter_shape: tf.Tensor) -> tf.Tensor:
    """The normalised Gaussian exp(-x^2 / (2 sigma^2)) at x = -(filter_shape-1)//2 ... filter_shape//2.

    Computed in float32, returned in sigma's dtype; sigma 0 gives the identity kernel instead of NaN.
    """
    filter_shape = tf.cast(filter_shape, tf.int32)
    x = tf.cast(tf.range(-filter_shape // 2 + 1, filter_shape // 2 + 1), tf.float32)
    weights = tf.where(tf.equal(x, 0.0), 1.0, tf.exp(-0.5 * tf.square(x / tf.cast(sigma, tf.float32))))
    return tf.cast(weights / tf.reduce_sum(weights), sigma.dtype)


def _kernel_half_widths(sigma_voxels: tf.Tensor) -> tf.Tensor:
    """Half the Gaussian kernel length per axis, int32 [3]: the kernel is 2*ceil(4*sigma + 0.5) + 1 long."""
    return tf.cast(tf.math.ceil(4.0 * sigma_voxels + 0.5), tf.int32)


def _symmetric_indices(begin: tf.Tensor, end: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Indices begin..end-1 into an axis of `size`, mirrored at the edges including the edge voxel.

    Inside [-size, 2*size) this is tf.pad's 'SYMMETRIC' mode (... 1 0 | 0 1 ... n-1 | n-1 n-2 ...); further out it
    keeps mirroring instead of failing.
    """
    period = 2 * size
    folded = tf.math.floormod(tf.range(begin, end), period)
    return tf.where(folded < size, folded, period - 1 - folded)


def _smoothed_region(image: tf.Tensor, begin: tf.Tensor, end: tf.Tensor, sigma_voxels: tf.Tensor) -> tf.Tensor:
    """image[..., begin:end] of the Gaussian-smoothed image (sigma in voxels, [3]) computed from that region only.

    The region plus the kernel half-width is cut out of the image and mirrored where it leaves the image, which
    is exactly what the original's symmetric padding of the whole image puts there; then it is filtered
    separably with VALID float32 convolutions on a channels-last tensor (the fastest of the ways measured on a
    CPU). Returns the image's dtype.
    """
    half = _kernel_half_widths(sigma_voxels)
    size = _spatial_size(image)
    inside_begin = tf.maximum(begin - half, 0)
    inside_end = tf.minimum(end + half, size)
    missing = tf.stack([inside_begin - (begin - half), end + half - inside_end], axis=1)

    def slice_and_mirror() -> tf.Tensor:  # one slice and one MirrorPad: the fast way, when the mirror fits
        inside = tf.slice(
            image, tf.concat([[0, 0], inside_begin], 0), tf.concat([[-1, -1], inside_end - inside_begin], 0)
        )
        return tf.pad(inside, tf.concat([tf.zeros([2, 2], tf.int32), missing], 0), mode="SYMMETRIC")

    def gather_mirrored() -> tf.Tensor:  # a kernel longer than the image (a few slices): mirror repeatedly
        region = image
        for axis in range(3):
            indices = _symmetric_indices(begin[axis] - half[axis], end[axis] + half[axis], size[axis])
            region = tf.gather(region, indices, axis=2 + axis)
        return region

    region = tf.cond(
        tf.reduce_all(missing <= (inside_end - inside_begin)[:, tf.newaxis]), slice_and_mirror, gather_mirrored
    )
    shape = tf.shape(region)
    values = tf.reshape(tf.cast(region, tf.float32), tf.concat([[-1], shape[2:5], [1]], 0))
    del region
    for axis in range(3):
        kernel = gaussian_kernel1d(sigma_voxels[axis], 2 * half[axis] + 1)
        kernel_shape = [1, 1, 1, 1, 1]
        kernel_shape[axis] = -1  # [D, H, W, in, out]: along this axis only
        values = tf.nn.conv3d(values, tf.reshape(kernel, kernel_shape), strides=[1] * 5, padding="VALID")
    out_shape = tf.concat([shape[0:2], tf.shape(values)[1:4]], 0)
    return tf.cast(tf.reshape(values, out_shape), image.dtype)


def gaussian(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """The image smoothed with a separable Gaussian of `sigma` voxels (scalar or per axis z, y, x).

    As the original: kernel length 2*ceil(4*sigma + 0.5) + 1 per axis, normalised, the image mirrored ('SYMMETRIC',
    the edge voxel included) by half the kernel length; each channel filtered on its own.
    """
    sigma = tf.broadcast_to(_as_float32(sigma), [3])
    return _smoothed_region(image, tf.zeros([3], tf.int32), _spatial_size(image), sigma)


def smooth_image(image: tf.Tensor, spacing: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """The image smoothed with a Gaussian of `sigma` mm (sigma / spacing voxels per axis)."""
    return gaussian(image, _as_float32(sigma) / spacing)


# --- resizing --------------------------------------------------------------------------------------------------


def resize_image(
    image: tf.Tensor, new_size: tf.Tensor, interpolator: str = "linear", data_format: str = CHANNELS_FIRST
) -> tf.Tensor:
    """`image` resized to `new_size` [3] ('area' or 'linear'), as two tf.image.resize passes: H, W, then D.

    Channels and z-slices are batch entries of the in-plane pass and need no transpose; for 'area' the float16
    image goes in as it is, so no full-size float32 copy is made. The in-plane result is rounded to the image's
    dtype before the z pass, kept on purpose: the original does the same, and the CT inputs match it bit for bit.
    """
    _check_channels_first(data_format)
    new_size = tf.cast(new_size, tf.int32)
    return resize_depth(resize_planes(image, new_size[1:3], interpolator), new_size[0], interpolator)


def _resize_method(interpolator: str) -> str:
    if interpolator not in _RESIZE_METHODS:
        raise ValueError(f"interpolator must be one of {sorted(_RESIZE_METHODS)}, not {interpolator!r}")
    return _RESIZE_METHODS[interpolator]


def resize_planes(image: tf.Tensor, new_size_hw: tf.Tensor, interpolator: str = "area") -> tf.Tensor:
    """The in-plane pass of `resize_image`: every z-slice of [N, C, D, H, W] resized to `new_size_hw` [2], in the
    image's dtype. Slices are independent, so a CT can go through in slabs of slices."""
    shape = tf.shape(image)
    new_size_hw = tf.cast(new_size_hw, tf.int32)
    planes = tf.reshape(image, tf.concat([[-1], shape[3:5], [1]], 0))  # [N*C*D, H, W, 1]
    planes = tf.cast(tf.image.resize(planes, new_size_hw, _resize_method(interpolator)), image.dtype)
    return tf.reshape(planes, tf.concat([shape[0:3], new_size_hw], 0))


def resize_depth(image: tf.Tensor, new_depth: tf.Tensor, interpolator: str = "area") -> tf.Tensor:
    """The z pass of `resize_image`: [N, C, D, H, W] resized to `new_depth` slices, in the image's dtype."""
    shape = tf.shape(image)
    # D is the height, H an unchanged width (the identity, exactly), W the channels
    volumes = tf.reshape(image, tf.concat([[-1], shape[2:5]], 0))  # [N*C, D, H, W]
    volumes = tf.image.resize(volumes, tf.stack([tf.cast(new_depth, tf.int32), shape[3]]), _resize_method(interpolator))
    return tf.cast(tf.reshape(volumes, tf.concat([shape[0:2], tf.shape(volumes)[1:4]], 0)), image.dtype)


# --- boxes -----------------------------------------------------------------------------------------------------


def bounding_box(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(start, end) int32 [3]: the first and last index (inclusive) of nonzero voxels of a bool [D, H, W] mask.

    An empty mask gives the whole image, as in the original.
    """
    starts, ends = [], []
    for axis in range(3):
        others = [other for other in range(3) if other != axis]
        present = tf.reduce_any(tf.cast(image, tf.bool), axis=others)
        # argmax finds the first True; on an all-False axis it gives 0, so start 0 and end size-1
        starts.append(tf.argmax(present, output_type=tf.int32))
        ends.append(tf.size(present, out_type=tf.int32) - 1 - tf.argmax(tf.reverse(present, [0]), output_type=tf.int32))
    return tf.stack(starts), tf.stack(ends)


def bbox_from_localization_output(
    image: tf.Tensor, spacing: tf.Tensor, paddings: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """(end, start) float32 [3] in mm, zyx: the foreground box of mask [N, 1, D, H, W] (the first one) + 10 mm.

    Measured from the outer edge of voxel 0 of the resized image, i.e. after removing the localization padding:
    start = spacing * (first - pad_before) - 10, end = spacing * (last + 1 - pad_before) + 10. Note the order.
    """
    first, last = bounding_box(image[0, 0])
    before = tf.cast(paddings, tf.int32)[:, 0]
    start = spacing * tf.cast(first - before, tf.float32) - BBOX_MARGIN_MM
    end = spacing * tf.cast(last - before + 1, tf.float32) + BBOX_MARGIN_MM
    return end, start


def valid_bbox_extent_for_segmentation(
    bbox_end: tf.Tensor,
    bbox_start: tf.Tensor,
    spacing: tf.Tensor,
    valid_sizes_z: tf.Tensor,
    valid_sizes_y: tf.Tensor,
    valid_sizes_x: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(start, end, valid_size): the box grown about its centre to a valid network input size at `spacing`.

    The extent in voxels is int(ceil(end - start) / spacing) (ceil of the mm extent, then truncated), its valid
    size from `get_valid_size`, and the new box centre ± (valid_size * spacing) // 2 mm, as in the original.
    Note the order: (start, end), the opposite of `bbox_from_localization_output`.
    """
    centre = (bbox_start + bbox_end) * 0.5
    extent = tf.cast(tf.math.ceil(bbox_end - bbox_start) / spacing, tf.int32)
    valid_size = get_valid_size(extent, valid_sizes_z, valid_sizes_y, valid_sizes_x)
    half = tf.math.floordiv(tf.cast(valid_size, tf.float32) * spacing, 2.0)
    return centre - half, centre + half, valid_size


def _bbox_index_range(
    size: tf.Tensor, spacing: tf.Tensor, bbox_start: tf.Tensor, bbox_end: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(first, stop, begin, end) int32 [3]: the box's voxel range first..stop-1 and that range clipped to the image.

    first = floor(start / spacing), stop = ceil((end + 1) / spacing). Kept as the original (docs/fidelity.md #6):
    the "+1" is in mm, not a voxel, so that crops and results stay comparable with the paper's.
    """
    first = tf.cast(tf.math.floor(bbox_start / spacing), tf.int32)
    stop = tf.cast(tf.math.ceil((bbox_end + 1.0) / spacing), tf.int32)
    return first, stop, tf.maximum(first, 0), tf.minimum(stop, size)


def crop_and_pad_with_bbox(
    image: tf.Tensor,
    spacing: tf.Tensor,
    bbox_start: tf.Tensor,
    bbox_end: tf.Tensor,
    data_format: str = CHANNELS_FIRST,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(image, paddings, croppings): the voxels of the box (mm, zyx), padded with 0 where the box leaves the image.

    croppings [3, 2] is what was cut off the image, paddings [3, 2] what was added outside it.
    """
    _check_channels_first(data_format)
    size = _spatial_size(image)
    first, stop, begin, end = _bbox_index_range(size, spacing, bbox_start, bbox_end)
    croppings = tf.stack([begin, size - end], axis=1)
    paddings = tf.stack([begin - first, stop - end], axis=1)
    # docs/fidelity.md #5, kept: the outside is padded with 0 HU, not air (-1024), as in the original
    return pad_image(crop_image(image, croppings), paddings, 0), paddings, croppings


# --- the pipeline steps ----------------------------------------------------------------------------------------


def preprocess_for_localization(
    image: tf.Tensor,
    spacing: tf.Tensor,
    new_spacing: tf.Tensor,
    sigma: tf.Tensor,
    valid_sizes_z: tf.Tensor,
    valid_sizes_y: tf.Tensor,
    valid_sizes_x: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(input, paddings): the localization network's input from a float16 CT [N, 1, D, H, W] in HU.

    Smoothed with `sigma` mm if sigma > 0 (inference uses 0), area-resized to `new_spacing`, centre-padded with
    -1024 to the next valid size, divided by 2048 and clamped to [-1, 1]. `paddings` locates the image in it.
    """
    size = _spatial_size(image)
    smoothed = tf.cond(
        tf.reduce_any(_as_float32(sigma) > 0.0), lambda: smooth_image(image, spacing, sigma), lambda: image
    )
    new_size = size_for_spacing(size, spacing, new_spacing)
    planes = resize_planes(smoothed, new_size[1:3], "area")
    return localization_input_from_planes(planes, new_size, valid_sizes_z, valid_sizes_y, valid_sizes_x)


def localization_input_from_planes(
    planes: tf.Tensor, new_size: tf.Tensor, valid_sizes_z: tf.Tensor, valid_sizes_y: tf.Tensor, valid_sizes_x: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The rest of `preprocess_for_localization` once every slice is area-resized in-plane (`resize_planes`): the
    z pass to `new_size`, the centre padding to the next valid size and the intensity scaling."""
    resized = resize_depth(planes, new_size[0], "area")
    valid_size = get_valid_size(new_size, valid_sizes_z, valid_sizes_y, valid_sizes_x)
    padded, paddings = center_pad_to_size(resized, valid_size, AIR_HU)
    return intensity_postprocessing_ct(padded), paddings


class _SegmentationBox(NamedTuple):
    first: tf.Tensor
    """The grown box's voxel range first..stop-1, int32 [3] (may leave the CT)."""
    stop: tf.Tensor
    begin: tf.Tensor
    """That range clipped to the CT: begin..end-1."""
    end: tf.Tensor
    valid_size: tf.Tensor
    """The network input size the box was grown for."""
    sigma_voxels: tf.Tensor
    """The smoothing sigma per axis in the CT's voxels."""


def _segmentation_box(
    size: tf.Tensor,
    spacing: tf.Tensor,
    new_spacing: tf.Tensor,
    bbox_end: tf.Tensor,
    bbox_start: tf.Tensor,
    sigma: tf.Tensor,
    valid_sizes_z: tf.Tensor,
    valid_sizes_y: tf.Tensor,
    valid_sizes_x: tf.Tensor,
) -> _SegmentationBox:
    """Where the segmentation input comes from in a CT of `size`: the box grown to a valid size at `new_spacing`."""
    start, end, valid_size = valid_bbox_extent_for_segmentation(
        bbox_end, bbox_start, new_spacing, valid_sizes_z, valid_sizes_y, valid_sizes_x
    )
    first, stop, begin, end_index = _bbox_index_range(size, spacing, start, end)
    sigma_voxels = tf.broadcast_to(_as_float32(sigma), [3]) / spacing
    return _SegmentationBox(first, stop, begin, end_index, valid_size, sigma_voxels)


def _smoothing_reach(sigma_voxels: tf.Tensor) -> tf.Tensor:
    """Voxels beyond the box the segmentation input depends on, int32 [3]: the kernel half-widths if smoothing."""
    smoothed = tf.reduce_any(sigma_voxels > 0.0)
    return tf.where(smoothed, _kernel_half_widths(sigma_voxels), tf.zeros([3], tf.int32))


def segmentation_box_voxels(
    size: tf.Tensor,
    spacing: tf.Tensor,
    new_spacing: tf.Tensor,
    bbox_end: tf.Tensor,
    bbox_start: tf.Tensor,
    sigma: tf.Tensor,
    valid_sizes_z: tf.Tensor,
    valid_sizes_y: tf.Tensor,
    valid_sizes_x: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(begin, end, reach) int32 [3]: the voxels begin..end-1 of a CT of `size` that the segmentation input is made
    from (the grown box, clipped to the CT), and how far beyond them the smoothing reads. Only the box plus that
    reach, clipped to the CT, needs converting to float16, and a slab of its slices plus the reach at a time (see
    `segmentation_planes`)."""
    box = _segmentation_box(
        size, spacing, new_spacing, bbox_end, bbox_start, sigma, valid_sizes_z, valid_sizes_y, valid_sizes_x
    )
    return box.begin, box.end, _smoothing_reach(box.sigma_voxels)


def preprocess_for_segmentation(
    image: tf.Tensor,
    spacing: tf.Tensor,
    new_spacing: tf.Tensor,
    bbox_end: tf.Tensor,
    bbox_start: tf.Tensor,
    sigma: tf.Tensor,
    valid_sizes_z: tf.Tensor,
    valid_sizes_y: tf.Tensor,
    valid_sizes_x: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(input, cropped_size, croppings, paddings): the SCN input from a float16 CT [N, 1, D, H, W] and a box.

    The box is grown to a valid size at `new_spacing` (`valid_bbox_extent_for_segmentation`), its voxels are cut
    out of the CT smoothed with `sigma` mm and padded with 0 outside the image (`crop_and_pad_with_bbox`), then
    area-resized to the valid size and scaled by 1/2048. As the original's result, but only the box plus the
    kernel's reach is smoothed, not the whole CT. `cropped_size` int32 [3] is the size of the padded crop.
    """
    return preprocess_for_segmentation_region(
        image,
        tf.zeros([3], tf.int32),
        _spatial_size(image),
        spacing,
        new_spacing,
        bbox_end,
        bbox_start,
        sigma,
        valid_sizes_z,
        valid_sizes_y,
        valid_sizes_x,
    )


def preprocess_for_segmentation_region(
    region: tf.Tensor,
    region_begin: tf.Tensor,
    size: tf.Tensor,
    spacing: tf.Tensor,
    new_spacing: tf.Tensor,
    bbox_end: tf.Tensor,
    bbox_start: tf.Tensor,
    sigma: tf.Tensor,
    valid_sizes_z: tf.Tensor,
    valid_sizes_y: tf.Tensor,
    valid_sizes_x: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`preprocess_for_segmentation` of a CT of `size` given only the part of it starting at voxel `region_begin`
    that holds the box and the smoothing's reach (`segmentation_box_voxels`), `region` [N, 1, ...]: the same values,
    without the rest of the CT in float16. `segmentation_planes` and `segmentation_input_from_planes` in one."""
    arguments = (size, spacing, new_spacing, bbox_end, bbox_start, sigma, valid_sizes_z, valid_sizes_y, valid_sizes_x)
    box = _segmentation_box(*arguments)
    planes = _box_planes(region, region_begin, box, box.begin[0], box.end[0])
    return segmentation_input_from_planes(planes, *arguments)


def segmentation_planes(
    region: tf.Tensor,
    region_begin: tf.Tensor,
    slab_begin: tf.Tensor,
    slab_end: tf.Tensor,
    size: tf.Tensor,
    spacing: tf.Tensor,
    new_spacing: tf.Tensor,
    bbox_end: tf.Tensor,
    bbox_start: tf.Tensor,
    sigma: tf.Tensor,
    valid_sizes_z: tf.Tensor,
    valid_sizes_y: tf.Tensor,
    valid_sizes_x: tf.Tensor,
) -> tf.Tensor:
    """The box's CT slices slab_begin..slab_end-1 (inside the box's clipped range) on their way to the segmentation
    input, float16 [N, 1, slab_end - slab_begin, h, w]: smoothed, cropped to the box, padded with 0 in-plane where
    the box leaves the CT, area-resized in-plane to the input's h and w. `region` [N, 1, ...] starting at voxel
    `region_begin` must hold those slices, the box's in-plane range and the smoothing's reach, clipped to the CT.

    Every slice is the whole box's own: the smoothing mirrors only at the CT's edges, which are the region's edges
    there, and the in-plane resize treats each slice alone. So a box that spans a whole-body scan can be converted
    and smoothed a slab of slices at a time (`segmentation_input_from_planes` puts them together).
    """
    box = _segmentation_box(
        size, spacing, new_spacing, bbox_end, bbox_start, sigma, valid_sizes_z, valid_sizes_y, valid_sizes_x
    )
    return _box_planes(region, region_begin, box, tf.cast(slab_begin, tf.int32), tf.cast(slab_end, tf.int32))


def _box_planes(
    region: tf.Tensor, region_begin: tf.Tensor, box: _SegmentationBox, slab_begin: tf.Tensor, slab_end: tf.Tensor
) -> tf.Tensor:
    begin = tf.concat([[slab_begin], box.begin[1:]], axis=0) - region_begin
    end = tf.concat([[slab_end], box.end[1:]], axis=0) - region_begin
    cropped = tf.cond(
        tf.reduce_any(box.sigma_voxels > 0.0),
        lambda: _smoothed_region(region, begin, end, box.sigma_voxels),
        lambda: crop_image(region, tf.stack([begin, _spatial_size(region) - end], axis=1)),
    )
    in_plane = tf.stack([box.begin - box.first, box.stop - box.end], axis=1) * tf.constant([[0], [1], [1]])
    # docs/fidelity.md #5, kept: the outside is padded with 0 HU, not air (-1024), as in the original
    return resize_planes(pad_image(cropped, in_plane, 0), box.valid_size[1:3], "area")


def segmentation_input_from_planes(
    planes: tf.Tensor,
    size: tf.Tensor,
    spacing: tf.Tensor,
    new_spacing: tf.Tensor,
    bbox_end: tf.Tensor,
    bbox_start: tf.Tensor,
    sigma: tf.Tensor,
    valid_sizes_z: tf.Tensor,
    valid_sizes_y: tf.Tensor,
    valid_sizes_x: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(input, cropped_size, croppings, paddings) of `preprocess_for_segmentation` from all the box's
    `segmentation_planes` in order: the slices where the box leaves the CT added as zeros (the crop's zero padding,
    which the in-plane resize leaves zero), the z pass of the area resize and the /2048 scaling."""
    box = _segmentation_box(
        size, spacing, new_spacing, bbox_end, bbox_start, sigma, valid_sizes_z, valid_sizes_y, valid_sizes_x
    )
    croppings = tf.stack([box.begin, size - box.end], axis=1)
    paddings = tf.stack([box.begin - box.first, box.stop - box.end], axis=1)
    padded = pad_image(planes, paddings * tf.constant([[1], [0], [0]]), 0)
    resized = resize_depth(padded, box.valid_size[0], "area")
    return intensity_postprocessing_ct(resized), box.stop - box.first, croppings, paddings


def _linear_source_positions(
    out_begin: tf.Tensor, out_end: tf.Tensor, in_size: tf.Tensor, out_size: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(lower, upper, lerp) of output indices out_begin..out_end-1: TensorFlow's half-pixel bilinear weights.

    Exactly the float32 arithmetic of tf.image.resize: in = (out + 0.5) * (in_size / out_size) - 0.5,
    lower = max(floor(in), 0), upper = min(ceil(in), in_size - 1), lerp = in - floor(in).
    """
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    position = (tf.cast(tf.range(out_begin, out_end), tf.float32) + 0.5) * scale - 0.5
    floor = tf.math.floor(position)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(position), tf.int32), in_size - 1)
    return lower, upper, position - floor


def postprocess_for_segmentation(
    segmentation_output: tf.Tensor,
    paddings: tf.Tensor,
    croppings: tf.Tensor,
    original_cropped_size: tf.Tensor,
    *,
    slab_size: int = POSTPROCESS_SLAB,
) -> tf.Tensor:
    """The uint8 label map [N, 1, D, H, W] on the full CT grid from the SCN's probabilities [N, 5, d, h, w].

    The original resizes the probabilities linearly to `original_cropped_size` (the padded crop), takes the
    argmax, removes `paddings` and pads `croppings` with 0 (background): `box_labels`, then that padding.
    """
    labels = box_labels(segmentation_output, paddings, original_cropped_size, slab_size=slab_size)
    return pad_image(labels, croppings, 0)


def box_labels(
    segmentation_output: tf.Tensor,
    paddings: tf.Tensor,
    original_cropped_size: tf.Tensor,
    *,
    slab_size: int = POSTPROCESS_SLAB,
) -> tf.Tensor:
    """The uint8 labels [N, 1, D', H', W'] of the box's voxels inside the CT (`croppings` locates them in it).

    As the original's linear resize of the probabilities to the padded crop, its argmax and the removal of
    `paddings`, computed in float32 one slab of `slab_size` output z-slices at a time (`box_label_slab`), so the
    labels equal those of a full two-pass resize while memory stays bounded.
    """
    paddings = tf.cast(paddings, tf.int32)
    kept_begin, kept_end = paddings[0, 0], tf.cast(original_cropped_size, tf.int32)[0] - paddings[0, 1]
    slab_starts = tf.range(kept_begin, kept_end, slab_size)
    slabs = tf.TensorArray(tf.uint8, size=tf.size(slab_starts), infer_shape=False)

    def step(index: tf.Tensor, slabs: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
        slab = box_label_slab(
            segmentation_output, paddings, original_cropped_size, slab_starts[index], slab_size=slab_size
        )
        return index + 1, slabs.write(index, tf.transpose(slab[:, 0], [1, 0, 2, 3]))  # [slab, N, H', W']

    _, slabs = tf.while_loop(
        lambda index, _: index < tf.size(slab_starts),
        step,
        (tf.constant(0), slabs),
        parallel_iterations=1,  # one slab at a time: the point is bounded memory
    )
    return tf.transpose(slabs.concat(), [1, 0, 2, 3])[:, tf.newaxis]  # [N, 1, D', H', W']


def box_label_slab(
    segmentation_output: tf.Tensor,
    paddings: tf.Tensor,
    original_cropped_size: tf.Tensor,
    slab_begin: tf.Tensor,
    *,
    slab_size: int = POSTPROCESS_SLAB,
) -> tf.Tensor:
    """`box_labels`' uint8 labels [N, 1, s, H', W'] of the padded crop's z-slices slab_begin..slab_begin+s-1, s
    at most `slab_size` and the slices kept (inside the CT): each slab resizes in-plane just the input slices it
    needs, then interpolates along z with tf.image.resize's exact formula. The slices `box_labels` gives at
    slab_begin - paddings[0, 0] on; the inference pipeline writes them into the CT's label slab by slab."""
    paddings = tf.cast(paddings, tf.int32)
    out_size = tf.cast(original_cropped_size, tf.int32)
    kept_begin = paddings[:, 0]
    kept_end = out_size - paddings[:, 1]
    probabilities = tf.transpose(segmentation_output, [0, 2, 3, 4, 1])  # [N, d, h, w, 5], the small input
    shape = tf.shape(probabilities)
    batch, in_depth, channels = shape[0], shape[1], shape[4]
    slab_begin = tf.cast(slab_begin, tf.int32)
    slab_end = tf.minimum(slab_begin + slab_size, kept_end[0])
    lower, upper, lerp = _linear_source_positions(slab_begin, slab_end, in_depth, out_size[0])
    needed = probabilities[:, lower[0] : upper[-1] + 1]
    count = tf.shape(needed)[1]
    planes = tf.reshape(needed, tf.concat([[-1], shape[2:5]], 0))
    planes = tf.image.resize(planes, out_size[1:3], tf.image.ResizeMethod.BILINEAR)  # float32
    planes = planes[:, kept_begin[1] : kept_end[1], kept_begin[2] : kept_end[2]]
    planes = tf.reshape(planes, tf.concat([[batch, count], tf.shape(planes)[1:3], [channels]], 0))
    below = tf.gather(planes, lower - lower[0], axis=1)
    above = tf.gather(planes, upper - lower[0], axis=1)
    values = below + (above - below) * lerp[tf.newaxis, :, tf.newaxis, tf.newaxis, tf.newaxis]
    return tf.cast(tf.argmax(values, axis=-1), tf.uint8)[:, tf.newaxis]  # [N, 1, s, H', W']
