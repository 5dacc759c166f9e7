"""Errors users can act on: one line that names the thing and says what to do."""


class MlopsError(Exception):
    """A problem with the user's input or environment, reported as one line (CLI exit code 2)."""


class InputError(MlopsError):
    """An input that cannot work (a bad argument, Param or table): retrying cannot help, so an
    operator fails its task at once, without retry; a fault of the environment stays a plain MlopsError."""


class SnapshotError(MlopsError):
    """A snapshot could not be taken, found, restored or trusted."""


class SnapshotRefError(SnapshotError, InputError):
    """A snapshot reference that names no snapshot: not an id, unknown in its store, or an ambiguous prefix."""
