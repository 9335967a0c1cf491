"""A CT on disk and on its processing grid: names, reading with checks, writing, geometry, resampling, and the
canonical view with its exact way back (`CanonicalCT`). SimpleITK and NumPy only, no TensorFlow."""

import SimpleITK as sitk

# ITK prints warnings about harmless metadata straight to stderr; problems reach us as exceptions instead.
sitk.ProcessObject.SetGlobalWarningDisplay(False)
