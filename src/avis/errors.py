"""Exceptions shown to users: the CLI prints their message without a traceback."""


class AvisError(Exception):
    """Base class of every error avis raises on purpose (bad input, bad file, bad weights)."""


class DataError(AvisError, ValueError):
    """A data file (annotation JSON, frame, audio feature) is missing or malformed.

    The message names the file, the entry and the field.
    """


class CheckpointError(AvisError, ValueError):
    """A weight file does not fit the model it is loaded into."""


class MediaError(AvisError, ValueError):
    """A video or audio file cannot be read or has no usable stream."""
