"""The one error type for unusable input, so that batch loops can report a case and go on."""


class InputError(ValueError):
    """A CT, label, folder or setup file that cannot be used; the message names the file and the reason."""


class RunStopped(RuntimeError):
    """A long run (training) that cannot go on; the message says why (a case failed to load, the loss diverged)."""
