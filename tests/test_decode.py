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


def test_16_bit_images_are_scaled_to_8_bits_not_clipped(tmp_path):
    """Issue 23: PIL's convert("L") clips a 16-bit PNG (99.6 % of this ramp would be 255)."""
    ramp = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I;16")  # what PIL reads a 16-bit grayscale PNG as
    want = np.rint(ramp / 257.0).astype(np.uint8)  # 0..65535 -> 0..255
    assert np.array_equal(decode_array(tmp_path / "g16.png", 48, 1)[0], want)
    rgb = decode_array(tmp_path / "g16.png", 48, 3)
    assert all(np.array_equal(rgb[c], want) for c in range(3))
    # a 32-bit integer image: 16-bit values scaled, 8-bit values kept; floats in [0, 1] times 255
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "i32.tif")
    assert np.array_equal(decode_array(tmp_path / "i32.tif", 48, 1)[0], want)
    small = (ramp // 257).astype(np.int32)
    Image.fromarray(small).save(tmp_path / "i8.tif")
    assert np.array_equal(decode_array(tmp_path / "i8.tif", 48, 1)[0], small.astype(np.uint8))
    Image.fromarray((ramp / 65535.0).astype(np.float32)).save(tmp_path / "f.tif")
    assert np.abs(decode_array(tmp_path / "f.tif", 48, 1)[0].astype(int) - want).max() <= 1


def test_eight_bit_leaves_8_bit_images_alone():
    from dicc.data.decode import eight_bit

    for mode in ("L", "RGB", "LA", "RGBA"):
        im = Image.new(mode, (4, 4))
        assert eight_bit(im) is im
