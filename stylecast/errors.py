"""Error types that carry a one-line, user-facing reason."""


class StylecastError(Exception):
    """Base class: the message is one line a user can act on."""


class MediaError(StylecastError):
    """A file is not a usable video (or audio) file: missing, empty, truncated, undecodable."""


class OptionsError(StylecastError):
    """Options or a StyleJSON document are invalid."""


class CancelledError(StylecastError):
    """The job was cancelled while running."""
