"""The package's own error types.

Every problem a user can cause (a bad file, a wrong argument, an unknown model) ends in a
subclass of :class:`ClassicNetsError` whose message names the file or argument and says what
was expected. The CLI prints these messages without a traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


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


class OutputError(ClassicNetsError):
    """A file that could not be written: a read-only folder, a full disk, a file where a folder
    should be. The message names the path; whatever was there before is left as it was."""


class CheckpointWriteError(OutputError, CheckpointError):
    """A checkpoint file that could not be written; the previous one is intact."""


# What the user can do something about, in words; other errors keep the system's own.
_NOTES = {errno.EACCES: " (a read-only folder?)", errno.EPERM: " (a read-only folder?)",
          errno.EFBIG: " (over the file-size limit, ulimit -f)"}


def file_in_the_way(path: Path) -> Path | None:
    """The file that stands where a folder of ``path`` should be, if any."""
    for part in (path, *path.parents):
        if os.path.lexists(part):
            return None if part.is_dir() else part
    return None


def output_error(path: str | os.PathLike, exc: OSError, hint: str | None = None,
                 kind: type[OutputError] = OutputError) -> OutputError:
    """The one message for a file that could not be written, whatever the writer: the path, the
    reason in words, whether a previous file is intact, and (``hint``, e.g. ``"--out DIR"``) the
    option that writes elsewhere. Every writer (:func:`classicnets.checkpoint.atomic_write`)
    raises through here."""
    path = Path(path)
    blocker = None
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and isinstance(exc.filename, str | os.PathLike):
        blocker = file_in_the_way(Path(exc.filename))
    if blocker is not None:
        reason = f"{blocker} is a file, not a folder"
    elif path.is_dir():
        reason = "it is a folder"
    else:
        reason = (exc.strerror or str(exc)) + _NOTES.get(exc.errno, "")
    message = f"could not write {path}: {reason}"
    if path.is_file():
        message += f"; the previous {path.name} is intact"
    if hint:
        message += f"; choose another place with {hint}"
    return kind(message)
