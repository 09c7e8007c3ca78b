"""Errors raised by the checkpoint file-format layer.

Both are ``ValueError`` subclasses so callers that already catch ``ValueError`` for
bad input keep working; catch :class:`CheckpointError` to handle any unreadable
checkpoint, or :class:`UnsafePickleError` to single out files that tried to run code.
"""


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated or in a format we do not support.

    The message always starts with the file name and says what is wrong, e.g.
    ``"model.safetensors: header says tensor 'x' ends at byte 4096 but the file has
    1000 bytes (truncated?)"``.
    """


class UnsafePickleError(CheckpointError):
    """A pickle inside a checkpoint asked for a global we refuse to import.

    Loading a checkpoint must never execute code from it, so only the handful of
    names needed to rebuild tensors are allowed; anything else (``os.system``,
    ``builtins.eval``, ...) ends the load before it is imported, let alone called.
    """

    def __init__(self, path, module, name):
        self.path = str(path)
        self.module = module
        self.name = name
        super().__init__(
            f"refusing to load {module}.{name} from {path}: "
            "only torch tensor rebuilding is allowed"
        )
