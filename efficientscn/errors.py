"""The one error type for unusable input, so that batch loops can report a case and go on."""


class InputError(ValueError):
    """A CT, label, folder or setup file that cannot be used; the message names the file and the reason."""


class LabelMapGiven(InputError):
    """A label map where a CT was expected (a dataset's labels beside its CTs, or swapped input and output)."""


class RunStopped(RuntimeError):
    """A long run (training) that cannot go on; the message says why (a case failed to load, the loss diverged)."""
