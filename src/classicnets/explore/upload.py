"""An image sent by the page (a drawing or a file), decoded within bounds.

The bounds are the explorer's: a request body of at most 10 MB (checked by the server before it
reads the body) and at most 4,000 x 4,000 pixels, checked from the file's header before a pixel
is decoded. A small file that claims to be huge, a decompression bomb, is refused by both that
check and Pillow's own (``DecompressionBombError``, and its warning, which is made an error here).
"""

from __future__ import annotations

import io
import threading
import warnings

from PIL import Image

from ..data.image import READABLE

MAX_BYTES = 10 * 1000 * 1000  # 10 MB: a phone's photo is 2-5 MB
MAX_SIDE = 4000  # pixels a side; a larger picture has far more detail than a 28x28 reading keeps
_WARNINGS = threading.Lock()  # the warnings filter is process-wide: one decoding changes it at a time


class Refused(Exception):
    """A request the explorer will not serve: its HTTP status and a message for a person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _bomb(name: str, exc: Exception) -> Refused:
    return Refused(413, f"{name}: refused as a decompression bomb (a small file that would decode to far more "
                        f"pixels than it holds): {exc}")


def decode(body: bytes, name: str) -> Image.Image:
    """The first frame of the image in ``body``, decoded; :class:`Refused` (400 or 413) otherwise.
    ``name`` is how messages call it: the file's name, or "the drawing"."""
    if not body:
        raise Refused(400, f"{name}: the request carried no image")
    with _WARNINGS, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(body))
            width, height = img.size
            if max(width, height) > MAX_SIDE:
                raise Refused(413, f"{name}: {width:,} x {height:,} pixels is too large: the explorer takes "
                                   f"images of at most {MAX_SIDE:,} x {MAX_SIDE:,} pixels")
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb(name, exc) from None
        except Refused:
            raise
        except Exception as exc:  # any failure to decode untrusted bytes is the file's fault, not ours
            raise Refused(400, f"{name}: not an image that can be read ({READABLE} are): "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from None
    return img
