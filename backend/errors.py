"""Errors that reach the user. Each names the file, what is wrong, and what to do."""

from __future__ import annotations


class HeadRigError(Exception):
    """Base class of errors the CLI and the service report without a traceback."""


class InputError(HeadRigError):
    """A user input cannot be used. CLI exit code 2; no output is written.

    Args:
        path: the offending file (as the user gave it).
        reason: what is wrong, e.g. "no face found".
        hint: what to do about it, e.g. "use a photo where one face is clearly visible".
        code: a stable machine-readable code, e.g. "no_face" (the service sends it to clients).
    """

    def __init__(self, path: str, reason: str, hint: str = "", code: str = "bad_input"):
        self.path, self.reason, self.hint, self.code = str(path), reason, hint, code
        super().__init__(self.one_line())

    def __reduce__(self):
        # Crosses process boundaries whole (the landmark pass's second process, service workers).
        return (type(self), (self.path, self.reason, self.hint, self.code))

    def one_line(self) -> str:
        text = f"{self.path}: {self.reason}"
        return f"{text}; {self.hint}" if self.hint else text
