"""One HTTP call with the standard library, every transport failure turned into a FlagError."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import NamedTuple

from .base import FlagError

EXCERPT = 300  # characters of an answer's body kept in an error message


class Answer(NamedTuple):
    """What came back: the status and the body."""

    status: int
    body: bytes

    def excerpt(self) -> str:
        """The start of the body, on one line, for an error message."""
        text = self.body.decode("utf-8", "replace").replace("\n", " ").strip()
        return text if len(text) <= EXCERPT else text[:EXCERPT] + "..."


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not something to follow: urllib would resend a POST as a body-less GET."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def call(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float, who: str) -> Answer:
    """Send one request and return its answer, whatever the status; no answer at all is a FlagError."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, error.read())
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise FlagError(f"{who}: {method} {url}: no connection within {timeout:g} s") from error
        raise FlagError(f"{who}: {method} {url}: cannot connect: {error.reason}") from error
    except TimeoutError as error:
        raise FlagError(f"{who}: {method} {url}: no answer within {timeout:g} s") from error
    except (OSError, http.client.HTTPException) as error:
        raise FlagError(f"{who}: {method} {url}: {type(error).__name__}: {error}") from error
