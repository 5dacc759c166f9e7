"""Errors users can act on: one line that names the thing and says what to do."""


class MlopsError(Exception):
    """A problem with the user's input or environment, reported as one line (CLI exit code 2)."""


class SnapshotError(MlopsError):
    """A snapshot could not be taken, found, restored or trusted."""
