"""The one exception type for errors a user can cause and fix."""

from __future__ import annotations


class WSIPipelineError(Exception):
    """An error in the user's input: a manifest, cohort table, slide or weights file.

    The message says what is wrong, where (file, field, slide) and how to fix it. The CLI
    prints it without a traceback and exits with status 2; inside a run, a per-slide error
    is recorded with this message and the run goes on.

    Parameters
    ----------
    what
        What is wrong, in one sentence.
    where
        The file, field or slide concerned (printed first).
    fix
        How to fix it.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.format())

    def format(self) -> str:
        """Return the full message: ``where: what. Fix: fix``."""
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text = f"{text}\n  fix: {self.fix}"
        return text
