"""Image decoding: large JPEGs decode at a reduced DCT scale, close to a full decode + resize."""

import numpy as np
from PIL import Image

from data_helpers import write_image
from dicc.data.decode import decode_array


def _full(path, size, mode):
    with Image.open(path) as im:
        return np.asarray(im.convert(mode).resize((size, size), Image.Resampling.BILINEAR))


def test_large_jpeg_reduced_scale_decode_is_close_to_full_decode(tmp_path):
    x = np.linspace(0, 255, 400)
    smooth = np.stack([np.add.outer(x, x) / 2, np.add.outer(x, 255 - x) / 2, np.full((400, 400), 90.0)], -1)
    path = write_image(tmp_path / "big.jpg", smooth.astype(np.uint8), quality=95)
    for size, channels, mode in ((100, 3, "RGB"), (48, 1, "L")):
        out = decode_array(path, size, channels)
        assert out.shape == (channels, size, size) and out.dtype == np.uint8
        ref = _full(path, size, mode).astype(np.int16)
        ref = ref[None] if ref.ndim == 2 else ref.transpose(2, 0, 1)
        assert np.abs(out.astype(np.int16) - ref).mean() < 2.0
    small = write_image(tmp_path / "small.jpg", smooth[:150, :150].astype(np.uint8), quality=95)
    assert np.array_equal(decode_array(small, 100, 3), _full(small, 100, "RGB").transpose(2, 0, 1))  # < 2x: no draft
