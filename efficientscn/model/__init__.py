"""What a trained network is, for training and inference alike: its precision, its input contract, its SavedModel
interface and one spec per stage. Imports neither `efficientscn.train` nor `efficientscn.infer`."""
