"""What a segmented case is written as: the label map, DICOM-SEG, organ statistics, the preview, and whether a
file already there counts as a case's output. No TensorFlow: an output works on arrays and images only.

A new output format is one module here, one entry in `writers.WRITERS` and one flag of `efficientscn predict`."""
