"""Every error class of the package, in one module that imports nothing.

Each class says what went wrong in its message (the file, variable or configuration key); the
class says whose fault it is: the user's configuration (:class:`ConfigError`,
:class:`LmdzConfigError`), an input file (:class:`InputError`), a model directory
(:class:`ManifestError`), a run that blew up (:class:`RunFailed`) or an external tool or service
(:class:`CdoError`, :class:`CdsError`, :class:`BridgeBuildError`).
"""


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or inconsistent; the message names it."""


class LmdzConfigError(ValueError):
    """A bad ``lmdz:`` configuration; the message names the key."""


class InputError(ValueError):
    """Bad input: a missing file, variable or coordinate, or a wrong grid. The message names it."""


class ManifestError(ValueError):
    """A manifest that breaks the format; the message names the file and the key."""


class RunFailed(RuntimeError):
    """A run produced non-finite values; what it wrote so far is kept under a ``.failed`` name."""


class CdoError(RuntimeError):
    """A cdo call failed; the message holds the command and cdo's own error."""


class CdsError(RuntimeError):
    """A download that cannot succeed: no key, a rejected request, or every attempt failed."""


class BridgeBuildError(RuntimeError):
    """cmake, the compiler or ctest failed; the message holds the tail of their output."""
