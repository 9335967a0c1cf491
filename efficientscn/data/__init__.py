"""Datasets on disk: the FLARE folder layout, setup files (cv splits, organ boxes), preprocessing, samples, loader."""
