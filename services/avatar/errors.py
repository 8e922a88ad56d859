"""The one error type of avatar preparation: a code for programs and a sentence for people."""

from __future__ import annotations


class AvatarError(RuntimeError):
    """An avatar that cannot be used. ``code`` is machine-readable (``no_face``, ``blurred``,
    ...); ``str()`` says what is wrong and what to do, and is safe to show on the page."""

    def __init__(self, code: str, message: str | None = None) -> None:
        if message is None:  # the old one-argument form: a plain message
            code, message = "unreadable", code
        super().__init__(message)
        self.code = code
