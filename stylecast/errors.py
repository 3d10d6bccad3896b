"""Error types that carry a one-line, user-facing reason."""
from __future__ import annotations


class StylecastError(Exception):
    """Base class: the message is one line a user can act on."""


class MediaError(StylecastError):
    """A file is not a usable video (or audio) file: missing, empty, truncated, undecodable."""


class InputUnavailable(MediaError):
    """A file that cannot be reached from this machine (missing, or not to be read here), as opposed to one
    whose content is unusable.  On a cluster: a node that does not mount the share the file is on."""

    code = "media_error"  # what a failed job reports (`error_code`): to its user the input is unusable either way


class OptionsError(StylecastError):
    """Options or a StyleJSON document are invalid."""


class CancelledError(StylecastError):
    """The job was cancelled while running."""


class ApiError(StylecastError):
    """A request the service refused: ``status`` (HTTP; 0 when the service could not be reached), ``code``
    (machine-readable), ``message`` (one line) and ``detail``.

    One class for every client: the JobManager raises it, the REST API turns it into the error envelope (with
    ``headers``: Allow, Content-Range, Retry-After), the HTTP SDK raises it from the envelope, and the Ray client
    raises the manager's own (it crosses the actor boundary as the cause of a RayTaskError)."""

    def __init__(self, status: int, code: str, message: str, detail=None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = headers

    @classmethod
    def from_validation(cls, exc) -> ApiError:
        """A pydantic ValidationError as the API's 422 ``validation_error``: each error's location and message."""
        errors = validation_errors(exc)
        return cls(422, "validation_error", "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors), errors)

    def __reduce__(self):
        return (ApiError, (self.status, self.code, self.message, self.detail, self.headers))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


def validation_errors(exc) -> list[dict]:
    """A pydantic (or FastAPI request) validation error's errors as the API's ``detail``: location, message, type."""
    return [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()]


def error_code(exc: StylecastError) -> str:
    """The machine-readable code a failed job reports for ``exc``: an ApiError's own, a class's ``code``, else
    the class name (``MediaError`` -> ``media_error``; a bare StylecastError -> ``job_error``)."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    name = type(exc).__name__
    return "job_error" if name == "StylecastError" else name.replace("Error", "").lower() + "_error"
