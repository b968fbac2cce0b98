"""Errors a user can act on."""

import os


class SynthgenError(Exception):
    """A problem with the user's input: printed as one line, no traceback; exit status 2."""

    exit_code = 2


class WriteFailed(SynthgenError):
    """A file could not be written (disk full, read-only folder): what was there before is intact; exit status 1."""

    exit_code = 1

    def __init__(self, path: os.PathLike | str, exc: OSError, kept: str = ""):
        reason = exc.strerror or str(exc)
        super().__init__(f"{path}: could not write ({reason}){'; ' + kept if kept else ''}")


class TrainingInterrupted(Exception):
    """Ctrl-C: a checkpoint was written; the CLI exits with 130."""

    def __init__(self, checkpoint: os.PathLike | str):
        super().__init__(f"interrupted: checkpoint saved to {checkpoint}")
        self.checkpoint = checkpoint
