"""Uploaded bytes -> an image array, refusing what would cost too much before it is decoded.

:func:`decode_upload` reads the picture's size from its header (PIL's ``Image.open`` reads no
pixels) and refuses one over ``max_pixels`` before decoding it: a small file can declare a huge
picture (a decompression bomb). Every refusal is a :class:`RequestError` with the HTTP status the
service answers with and a one-line message.
"""

from __future__ import annotations

import io

import numpy as np

from ..faces import as_image_array

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # an upload's size cap (413 above it)
DEFAULT_MAX_PIXELS = 40_000_000  # a picture's pixel cap (422 above it): 40 MP, e.g. 7,700 x 5,200


class RequestError(Exception):
    """A request the service refuses: ``status`` (HTTP) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = int(status), " ".join(str(message).split())


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """``uint8`` ``HxW`` (grayscale) or ``HxWx3`` (RGB) array of an uploaded image file, turned
    upright by its EXIF orientation. Raises :class:`RequestError`: 400 for an empty body, 422 for
    bytes that are not a readable image or a picture over ``max_pixels``."""
    from PIL import Image, ImageOps

    if not data:
        raise RequestError(400, "no image: send the file as the multipart field 'image' or as the request body")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:  # PIL's own cap (2 x Image.MAX_IMAGE_PIXELS)
        raise RequestError(422, f"the picture is too large to decode: {_one_line(err)}") from None
    except Image.UnidentifiedImageError:
        raise RequestError(422, "cannot decode the image: not an image file, or a format PIL cannot read") from None
    except Exception as err:  # noqa: BLE001 - PIL's plugins raise many types for bytes they cannot read
        raise RequestError(422, f"cannot decode the image: {_one_line(err)}") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise RequestError(
                422,
                f"the picture is {w} x {h} = {w * h:,} pixels, over this server's limit of {max_pixels:,} "
                "(--max-pixels)",
            )
        try:
            return as_image_array(ImageOps.exif_transpose(im))
        except Image.DecompressionBombError as err:
            raise RequestError(422, f"the picture is too large to decode: {_one_line(err)}") from None
        except Exception as err:  # noqa: BLE001 - truncated or corrupt data, in any plugin
            raise RequestError(422, f"cannot decode the image (corrupt or truncated): {_one_line(err)}") from None
