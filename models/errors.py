"""The root exception of the ``models`` package."""


class ModelsError(Exception):
    """Base class of every error raised by :mod:`models`; messages say what to do."""


class DataError(ModelsError):
    """A data set is missing, unreadable or malformed."""


class CheckpointError(ModelsError):
    """A checkpoint is missing, corrupt, tampered with or of an unknown format."""
