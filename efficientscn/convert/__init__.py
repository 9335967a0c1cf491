"""A models folder in other shapes: the original's released SavedModels imported as ours (`original`), our
networks exported to ONNX (`onnx`)."""
