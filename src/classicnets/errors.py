"""The package's own error types.

Every problem a user can cause (a bad file, a wrong argument, an unknown model) ends in a
subclass of :class:`ClassicNetsError` whose message names the file or argument and says what
was expected. The CLI prints these messages without a traceback.
"""


class ClassicNetsError(Exception):
    """Base class of every error classicnets raises on purpose."""


class UnknownModelError(ClassicNetsError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataFormatError(ClassicNetsError, ValueError):
    """A data file that is missing, truncated or not of the expected format."""


class DownloadError(ClassicNetsError):
    """A download that failed or whose checksum did not match."""


class CheckpointError(ClassicNetsError, ValueError):
    """A checkpoint that is missing, incomplete, or does not match the model."""


class TrainingError(ClassicNetsError):
    """Training stopped for a reason the user must know about (e.g. a non-finite loss)."""


class InputError(ClassicNetsError, ValueError):
    """An argument whose value a model or tool cannot take: an input size, a model argument, a layer."""
