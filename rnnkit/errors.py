"""User-facing errors.

Anything a user can cause with a file, a flag or a config value raises a subclass of
:class:`RnnkitError` whose message is one line naming the file and line, or the field, that is wrong.
The CLI prints it as ``rnnkit: error: <message>`` and exits with status 2, never with a traceback
(:class:`TrainingInterrupted`, not an error, has its own status).
Programming errors stay ``ValueError``/``TypeError``; a tensor of the wrong shape, dtype or size passed to a
layer of :mod:`rnnkit.nn` raises :class:`ShapeError`, which is both a ``ValueError`` and the ``RuntimeError``
that ``torch.nn`` raises there, so code written for either layer catches it.
"""

from __future__ import annotations


class RnnkitError(Exception):
    """Base class of errors caused by user input; the message is shown as is."""


class DataError(RnnkitError):
    """A data file is missing, empty, binary, not UTF-8 or malformed (message: ``path:line: ...``)."""


class EncodingError(DataError):
    """A text file's bytes are not valid in the encoding it is read with (message: ``path:line: ...``)."""


class ConfigError(RnnkitError):
    """A config value or flag is unknown, ill-typed or out of range (message names the field)."""


class CheckpointError(RnnkitError):
    """A run folder or checkpoint is missing, damaged, or belongs to another task or shape."""


class ShapeError(ValueError, RuntimeError):
    """A tensor passed to an :mod:`rnnkit.nn` module has the wrong shape, dtype or values (lengths)."""


class TrainingInterrupted(RnnkitError):
    """Training stopped on Ctrl-C (SIGINT) or SIGTERM after saving its ``last`` checkpoint; the message says
    how to resume. The CLI prints it and exits with ``exit_code``, 128 + the signal's number (130, 143)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)
