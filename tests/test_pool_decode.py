"""egal.pool.decode_batch: every encoding to the expected values, ROIs, and row errors."""
from __future__ import annotations

import pickle
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egal.pool import DecodeSettings, RawBatch, decode_batch, open_pool
from egal.pool.encode import encode_dicom, encode_jpeg, encode_png
from pool_files import gradient, png_16bit, png_grey, write_pool

FIGSHARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "figshare_brain_tumor.parquet"


def raw(images, rois=None, roi_kind=None, image_is_path=False, base_dir="/nonexistent") -> RawBatch:
    n = len(images)
    return RawBatch(
        index=0,
        start_row=0,
        ids=[f"r{i}" for i in range(n)],
        images=list(images),
        image_is_path=image_is_path,
        rois=list(rois) if rois is not None else [None] * n,
        roi_kind=roi_kind,
        base_dirs=[base_dir] * n,
    )


def decode_one(data: bytes, size=(12, 16), channels=1, **kwargs):
    decoded = decode_batch(raw([data]), DecodeSettings(size, channels, **kwargs))
    assert decoded.errors == [None], decoded.errors
    return decoded.images[0]


# ---------------------------------------------------------------- image values


def test_png_8bit_grey_is_divided_by_255():
    pixels = gradient(12, 16)
    image = decode_one(encode_png(pixels))
    assert image.shape == (1, 12, 16) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], pixels.astype(np.float32) / 255)


def test_grey_is_replicated_to_three_channels():
    pixels = gradient(12, 16)
    image = decode_one(encode_png(pixels), channels=3)
    for c in range(3):
        np.testing.assert_array_equal(image[c], pixels.astype(np.float32) / 255)


def test_png_rgb_keeps_channels_or_becomes_luminance():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    three = decode_one(encode_png(rgb), channels=3)
    np.testing.assert_array_equal(three, rgb.transpose(2, 0, 1).astype(np.float32) / 255)
    one = decode_one(encode_png(rgb), channels=1)
    luma = (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255  # ITU-R 601-2
    np.testing.assert_allclose(one[0], luma, atol=0.51 / 255)  # Pillow rounds to 8 bits


def test_png_with_alpha_or_palette_drops_alpha():
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[..., 0] = gradient(12, 16)
    rgba = np.dstack([rgb, np.full((12, 16), 7, np.uint8)])
    out = BytesIO()
    Image.fromarray(rgba).save(out, format="PNG")
    image = decode_one(out.getvalue(), channels=3)
    np.testing.assert_array_equal(image[0], rgb[..., 0] / np.float32(255))
    np.testing.assert_array_equal(image[1:], 0)


def test_jpeg_decodes_close_to_the_encoded_ramp():
    pixels = gradient(32, 32)
    image = decode_one(encode_jpeg(pixels, quality=95), size=(32, 32))
    np.testing.assert_allclose(image[0], pixels / 255.0, atol=4 / 255)


def test_png_16bit_is_divided_by_65535_keeping_precision():
    pixels = gradient(12, 16, high=65535, dtype=np.uint16)
    assert np.any(pixels % 257)  # values an 8-bit path could not represent
    image = decode_one(encode_png(pixels))
    np.testing.assert_allclose(image[0], pixels / 65535.0, rtol=0, atol=1e-7)


def test_the_16bit_png_writer_of_these_tests_is_what_pillow_reads():
    # png_16bit writes every PNG filter and Adam7 interlacing; on grey, which Pillow reads at full depth, the
    # samples come back exactly, so the colour tests below rest on a correct file.
    samples = np.random.default_rng(3).integers(0, 65536, (13, 17, 1)).astype(np.uint16)
    for interlace in (False, True):
        np.testing.assert_array_equal(np.asarray(Image.open(BytesIO(png_16bit(samples, interlace)))), samples[..., 0])


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png_16bit_colour_and_alpha_keep_full_depth(channels, interlace):
    # Pillow reads these at 8 bits per channel (the high byte); egal reads the low byte too.
    from egal.importers.imaging import read_header

    samples = np.random.default_rng(channels).integers(0, 65536, (12, 16, channels)).astype(np.uint16)
    assert read_header(png_16bit(samples, interlace)).bits == 16  # pool info said 8-bit colour
    colour = samples[..., :1] if channels == 2 else samples[..., :3]  # alpha dropped
    image = decode_one(png_16bit(samples, interlace), channels=3)
    expected = np.repeat(colour, 3, axis=-1) if channels == 2 else colour
    np.testing.assert_allclose(image, expected.transpose(2, 0, 1) / 65535.0, rtol=0, atol=1e-7)
    if channels >= 3:  # grey by ITU-R 601-2 luminance, at full depth
        grey = decode_one(png_16bit(samples, interlace), channels=1)
        np.testing.assert_allclose(grey[0], colour @ np.array([0.299, 0.587, 0.114]) / 65535.0, rtol=0, atol=1e-6)


def test_16bit_precision_survives_resizing():
    pixels = np.full((20, 30), 1000, np.uint16)
    image = decode_one(encode_png(pixels), size=(7, 11))
    np.testing.assert_allclose(image, 1000 / 65535, rtol=1e-6)


def test_resize_is_bilinear_on_floats():
    # Pillow's bilinear filter is a symmetric triangle: on a linear ramp, every output
    # pixel away from the borders is the ramp's value at the output pixel's centre.
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 1000, (8, 1))  # [8, 64]
    image = decode_one(encode_png(ramp), size=(8, 32))[0]
    centres = (np.arange(32) + 0.5) * 2 - 0.5  # output centres in input pixel indices
    np.testing.assert_allclose(image[:, 2:-2], np.tile(centres * 1000 / 65535, (8, 1))[:, 2:-2], atol=1e-6)
    upscaled = decode_one(encode_png(ramp), size=(8, 128))[0]
    centres = (np.arange(128) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(upscaled[:, 2:-2], np.tile(centres * 1000 / 65535, (8, 1))[:, 2:-2], atol=1e-6)


def dicom_windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The LINEAR VOI function of DICOM PS3.3 C.11.2.1.2.1, to [0, 1]."""
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    y = ((values - (center - 0.5)) / (width - 1) + 0.5)
    return np.where(values <= low, 0.0, np.where(values > high, 1.0, y))


def min_max(values: np.ndarray) -> np.ndarray:
    return (values - values.min()) / (values.max() - values.min())


def test_dicom_monochrome2_is_min_max_scaled():
    stored = gradient(12, 16, high=3900, dtype=np.uint16) + 100  # within 12 bits
    image = decode_one(encode_dicom(stored, bits_stored=12))
    np.testing.assert_allclose(image[0], min_max(stored.astype(np.float64)), atol=1e-6)


def test_dicom_applies_rescale_before_the_window():
    stored = gradient(12, 16, high=2000, dtype=np.uint16)
    hounsfield = stored * 2.0 - 1000  # slope 2, intercept -1000: -1000 .. 3000
    data = encode_dicom(stored, rescale=(2, -1000), window=(400, 1200))
    expected = min_max(dicom_windowed(hounsfield, 400, 1200))
    np.testing.assert_allclose(decode_one(data)[0], expected, atol=1e-6)
    # Without the rescale the same window would cut elsewhere: the test can tell.
    assert not np.allclose(min_max(dicom_windowed(stored.astype(float), 400, 1200)), expected, atol=1e-3)


def test_dicom_signed_values_with_rescale():
    stored = (gradient(12, 16, high=3000, dtype=np.int32) - 1500).astype(np.int16)
    image = decode_one(encode_dicom(stored, rescale=(0.5, 20)))
    np.testing.assert_allclose(image[0], min_max(stored * 0.5 + 20.0), atol=1e-6)


def test_dicom_monochrome1_is_inverted():
    stored = gradient(12, 16, high=1000, dtype=np.uint16)
    image = decode_one(encode_dicom(stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(image[0], 1 - min_max(stored.astype(np.float64)), atol=1e-6)


def test_dicom_without_preamble_is_still_recognised():
    stored = gradient(12, 16, high=255, dtype=np.uint8)
    image = decode_one(encode_dicom(stored, preamble=False))
    np.testing.assert_allclose(image[0], min_max(stored.astype(np.float64)), atol=1e-6)


def test_constant_dicom_decodes_to_zeros():
    image = decode_one(encode_dicom(np.full((12, 16), 77, np.uint16)))
    assert not image.any()


def _dicom_dataset(stored: np.ndarray):
    import pydicom

    return pydicom.dcmread(BytesIO(encode_dicom(stored)))


def test_multiframe_dicom_is_a_row_error():
    ds = _dicom_dataset(np.zeros((12, 16), np.uint16))
    ds.NumberOfFrames = 2
    ds.PixelData = np.zeros((2, 12, 16), np.uint16).tobytes()
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    decoded = decode_batch(raw([out.getvalue()]), DecodeSettings((12, 16)))
    assert decoded.errors == ["image: multi-frame DICOM (2 frames) is not supported"]


def test_compressed_dicom_without_a_decoder_names_the_transfer_syntax():
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = _dicom_dataset(np.zeros((12, 16), np.uint16))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51not really a codestream"])
    ds["PixelData"].VR = "OB"
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    decoded = decode_batch(raw([out.getvalue()]), DecodeSettings((12, 16)))
    assert decoded.errors[0].startswith("image: DICOM transfer syntax JPEG 2000 Image Compression (Lossless Only)")
    assert JPEG2000Lossless in decoded.errors[0]


# ---------------------------------------------------------------- masks and boxes


def mask_png(mask: np.ndarray, value: int = 255) -> bytes:
    return encode_png((mask > 0).astype(np.uint8) * value)


def test_mask_of_another_size_is_resized_nearest():
    rng = np.random.default_rng(1)
    small = rng.random((6, 8)) > 0.5  # same 4:3 aspect as the 12 x 16 image
    decoded = decode_batch(raw([png_grey(12, 16)], [mask_png(small)], "mask"),
                           DecodeSettings((12, 16), mask_size=(9, 12)))
    assert decoded.errors == [None]
    rows = np.floor((np.arange(9) + 0.5) * 6 / 9).astype(int)
    cols = np.floor((np.arange(12) + 0.5) * 8 / 12).astype(int)
    expected = small[rows][:, cols].astype(np.uint8)
    np.testing.assert_array_equal(decoded.masks[0], expected)
    assert decoded.masks.dtype == np.uint8 and decoded.has_roi[0]


def test_mask_nonzero_is_roi_whatever_the_value_or_channels():
    mask = np.zeros((12, 16), bool)
    mask[3:7, 5:11] = True
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[mask, 2] = 9
    for data in (mask_png(mask, 1), mask_png(mask, 255), encode_png(rgb)):
        decoded = decode_batch(raw([png_grey(12, 16)], [data], "mask"), DecodeSettings((12, 16)))
        np.testing.assert_array_equal(decoded.masks[0], mask.astype(np.uint8))


def test_a_partly_transparent_mask_is_what_is_visible_on_it():
    # Annotation tools export overlays: strokes on a transparent background, which is sometimes white. A
    # transparent pixel is never ROI (before, a transparent white background was all ROI); transparency can be
    # an alpha channel or a PNG colour key (tRNS); a stray transparent pixel (an editor's rotate) changes nothing.
    import io

    from PIL import Image

    from egal.pool.errors import RowError
    from egal.pool.rois import read_mask_png

    mask = np.zeros((12, 16), bool)
    mask[3:7, 5:11] = True

    def rgba(stroke, background):
        pixels = np.empty((12, 16, 4), np.uint8)
        pixels[...] = background
        pixels[mask] = stroke
        return Image.fromarray(pixels, "RGBA")

    def png(image, **options):
        buffer = io.BytesIO()
        image.save(buffer, "PNG", **options)
        return buffer.getvalue()

    stray = np.zeros((12, 16, 4), np.uint8)
    stray[..., 3] = 255
    stray[mask, :3] = 255
    stray[0, 0] = (0, 0, 0, 0)  # opaque black, a white ROI, one transparent corner
    hidden = np.zeros((12, 16, 4), np.uint8)
    hidden[mask, 0] = 200  # the ROI in colour, alpha 0 everywhere: the alpha channel says nothing
    keyed_grey = np.where(mask, 128, 255).astype(np.uint8)  # white is transparent by its colour key
    keyed_rgb = np.zeros((12, 16, 3), np.uint8)
    keyed_rgb[~mask] = (255, 255, 255)
    keyed_rgb[mask] = (0, 200, 0)
    for name, data in [
        ("red translucent strokes, transparent white", png(rgba((200, 30, 30, 128), (255, 255, 255, 0)))),
        ("white strokes, transparent black", png(rgba((255, 255, 255, 255), (0, 0, 0, 0)))),
        ("a stray transparent pixel", png(Image.fromarray(stray, "RGBA"))),
        ("grey with a colour key", png(Image.fromarray(keyed_grey, "L"), transparency=255)),
        ("RGB with a colour key", png(Image.fromarray(keyed_rgb, "RGB"), transparency=(255, 255, 255))),
    ]:
        np.testing.assert_array_equal(read_mask_png(data), mask, err_msg=name)
    for background in ((0, 0, 0, 0), (255, 255, 255, 0)):  # every drawn pixel black: the ROI or an empty mask?
        with pytest.raises(RowError, match="every pixel drawn on it is black"):
            read_mask_png(png(rgba((0, 0, 0, 255), background)))
    # Nothing drawn over hidden colour: an empty overlay cleared to white, or an ROI with a zeroed alpha?
    with pytest.raises(RowError, match="transparent everywhere but hides nonzero colour"):
        read_mask_png(png(Image.fromarray(hidden, "RGBA")))
    assert not read_mask_png(png(Image.fromarray(np.zeros((12, 16, 4), np.uint8), "RGBA"))).any()  # empty
    # A 4-bit grey PNG with a colour key: Pillow scales its samples to 0-255 but not the key.
    four_bit = Image.fromarray(np.where(mask, 8, 15).astype(np.uint8) * 17, "L")
    np.testing.assert_array_equal(read_mask_png(png(four_bit, bits=4, transparency=15)), mask)


@pytest.mark.parametrize("interlace", [False, True])
def test_a_16bit_colour_mask_is_read_at_full_depth(interlace):
    # Label maps drawn in small values (1, 2, 3) in a 16-bit colour PNG: Pillow's 8-bit reading keeps the high
    # byte, 0, and the ROI was lost; an alpha below 256 read as transparent.
    from egal.pool.rois import read_mask_png

    mask = np.zeros((12, 16), bool)
    mask[3:7, 5:11] = True
    rgb = np.zeros((12, 16, 3), np.uint16)
    rgb[mask, 1] = 7
    rgba = np.zeros((12, 16, 4), np.uint16)
    rgba[..., 3] = 200  # faintly drawn everywhere: all drawn
    rgba[mask, 0] = 2
    rgba[0:2, :, 0] = 9  # colour under a transparent band is never ROI
    rgba[0:2, :, 3] = 0
    grey_alpha = np.zeros((12, 16, 2), np.uint16)
    grey_alpha[..., 1] = 65535
    grey_alpha[mask, 0] = 1
    keyed = np.full((12, 16, 3), 1000, np.uint16)  # a 16-bit colour key: 1000 is transparent, 1001 drawn
    keyed[mask] = (1000, 1000, 1001)
    for name, data in [("RGB", png_16bit(rgb, interlace)), ("RGBA", png_16bit(rgba, interlace)),
                       ("grey + alpha", png_16bit(grey_alpha, interlace)),
                       ("RGB with a colour key", png_16bit(keyed, interlace, colour_key=(1000, 1000, 1000)))]:
        np.testing.assert_array_equal(read_mask_png(data), mask, err_msg=name)


def _with_orientation(pixels: np.ndarray, orientation: int, fmt: str = "PNG") -> bytes:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    out = BytesIO()
    image.save(out, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def _as_shown(stored: np.ndarray, orientation: int) -> np.ndarray:
    """What EXIF's orientations 1-8 mean, written out independently of egal and Pillow."""
    return {1: stored, 2: stored[:, ::-1], 3: stored[::-1, ::-1], 4: stored[::-1], 5: stored.T,
            6: stored[::-1].T, 7: stored[::-1, ::-1].T, 8: stored[:, ::-1].T}[orientation]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_images_masks_and_header_sizes(orientation):
    # Viewers and annotation tools show an image turned by its EXIF orientation, and ROIs are drawn on what they
    # show: egal decodes images and masks turned the same way (it used the stored pixels).
    from egal.importers.imaging import read_header
    from egal.pool.rois import read_mask_png

    stored = gradient(6, 10)
    stored[0, :3] = 255  # a mark that tells every orientation apart
    shown = _as_shown(stored, orientation)
    data = _with_orientation(stored, orientation)
    np.testing.assert_array_equal(decode_one(data, size=shown.shape)[0], shown / np.float32(255))
    assert (read_header(data).height, read_header(data).width) == shown.shape
    np.testing.assert_array_equal(read_mask_png(_with_orientation((stored > 128).astype(np.uint8), orientation)),
                                  shown > 128)
    if orientation in (6, 8):
        jpeg = _with_orientation(np.kron(stored, np.ones((4, 4), np.uint8)), orientation, "JPEG")
        expected = _as_shown(np.kron(stored, np.ones((4, 4), np.uint8)), orientation) / 255
        np.testing.assert_allclose(decode_one(jpeg, size=expected.shape)[0], expected, atol=24 / 255)


def test_an_roi_drawn_on_the_stored_pixels_of_a_turned_image_is_refused_saying_it_is_turned():
    from egal.importers.imaging import read_header
    from egal.pool.errors import RowError
    from egal.pool.rois import check_aspect, check_box

    stored = gradient(32, 48)
    data = _with_orientation(stored, 6)  # shown 32 wide, 48 high
    decoded = decode_batch(raw([data, data], [mask_png(np.ones((32, 48), bool)), None], "mask"),
                           DecodeSettings((48, 32)))
    assert decoded.errors[0] == ("mask: aspect ratio 1.50 (48x32) does not match the image's 0.67 (32x48) (the "
                                 "image is shown turned 90 degrees clockwise, by its EXIF orientation 6: egal reads "
                                 "ROIs on the image as shown)")
    garbage = decode_batch(raw([data], [b"not a png"], "mask"), DecodeSettings((48, 32)))
    assert "turned" not in garbage.errors[0]  # only a misfit is explained by the turn
    header = read_header(data)
    with pytest.raises(RowError, match=r"lies outside the 32x48 image \(the image is shown turned 90 degrees"):
        check_box(0, [30, 2, 46, 20], header.width, header.height, header.orientation)
    with pytest.raises(RowError, match=r"does not match the image's 0.67 \(32x48\)$"):  # as stored: no note
        check_aspect((32, 48), (48, 32))


def test_a_damaged_exif_block_leaves_the_pixels_as_stored_without_a_warning():
    import warnings

    from egal.importers.imaging import read_header

    stored = gradient(6, 10)
    exif = Image.fromarray(stored).getexif()
    exif[0x0112] = 6
    out = BytesIO()
    Image.fromarray(stored).save(out, "JPEG", quality=95, exif=b"Exif\x00\x00" + exif.tobytes()[:10] + b"\xff" * 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow printed "Corrupt EXIF data" once per image
        assert decode_one(out.getvalue(), size=(6, 10)).shape == (1, 6, 10)
        assert (read_header(out.getvalue()).width, read_header(out.getvalue()).height) == (10, 6)


def test_a_camera_jpeg_with_extra_frames_is_a_jpeg_of_its_first_frame():
    from egal.importers.imaging import read_header

    first = gradient(6, 10)
    second = 255 - first
    out = BytesIO()
    Image.fromarray(first).save(out, "MPO", save_all=True, append_images=[Image.fromarray(second)])
    assert read_header(out.getvalue()).format == "JPEG"  # pool info listed such files as "MPO"
    decoded = decode_one(out.getvalue(), size=(6, 10))[0] * 255
    assert np.abs(decoded - first).max() < 8 and np.abs(decoded - second).mean() > 50


def test_a_mask_drawn_on_a_turned_square_jpeg_lands_on_what_the_viewer_showed():
    # A square image leaves no aspect ratio to catch a turned mask: before, it was silently rotated against it.
    stored = np.zeros((32, 32), np.uint8)
    stored[4:12, 20:28] = 250  # the lesion, top right as stored
    shown = _as_shown(stored, 6)  # turned clockwise for display: bottom right
    mask = shown > 128  # drawn on the shown image, saved without EXIF (as tools export masks)
    decoded = decode_batch(raw([_with_orientation(stored, 6, "JPEG")], [mask_png(mask)], "mask"),
                           DecodeSettings((32, 32)))
    assert decoded.errors == [None]
    np.testing.assert_array_equal(decoded.masks[0], mask.astype(np.uint8))
    assert decoded.images[0][0][mask].min() > 0.8 and decoded.images[0][0][~mask].max() < 0.2


def test_mask_with_another_aspect_ratio_is_a_row_error():
    images = [png_grey(16, 16), png_grey(16, 16)]
    masks = [mask_png(np.ones((8, 16), bool)), mask_png(np.ones((8, 8), bool))]
    decoded = decode_batch(raw(images, masks, "mask"), DecodeSettings((16, 16)))
    assert decoded.errors[0] == "mask: aspect ratio 2.00 (16x8) does not match the image's 1.00 (16x16)"
    assert decoded.errors[1] is None and decoded.masks[1].all()
    assert not decoded.masks[0].any() and not decoded.images[0].any() and not decoded.has_roi[0]


def test_boxes_rasterise_like_a_directly_built_mask():
    # Image 40 wide, 20 high; mask grid (10, 20): scale 0.5 on both axes.
    boxes = [[4, 2, 10, 8], [8, 6, 30, 12], [36, 0, 40, 20]]
    decoded = decode_batch(raw([png_grey(20, 40)], [boxes], "boxes"), DecodeSettings((20, 40), mask_size=(10, 20)))
    expected = np.zeros((10, 20), np.uint8)
    expected[1:4, 2:5] = 1
    expected[3:6, 4:15] = 1
    expected[0:10, 18:20] = 1
    np.testing.assert_array_equal(decoded.masks[0], expected)


def test_boxes_follow_the_pixel_centre_rule_off_the_grid():
    boxes = [[1.2, 0.4, 5.6, 3.5]]  # on a 10 x 10 image, mask grid = image grid
    decoded = decode_batch(raw([png_grey(10, 10)], [boxes], "boxes"), DecodeSettings((10, 10)))
    expected = np.zeros((10, 10), np.uint8)
    for y in range(10):
        for x in range(10):
            expected[y, x] = 1.2 <= x + 0.5 < 5.6 and 0.4 <= y + 0.5 < 3.5
    np.testing.assert_array_equal(decoded.masks[0], expected)


@pytest.mark.parametrize(
    "box, reason",
    [
        ([10, 5, 300, 40], "boxes: box 1 [10, 5, 300, 40] lies outside the 256x128 image"),
        ([-1, 5, 30, 40], "boxes: box 1 [-1, 5, 30, 40] lies outside the 256x128 image"),
        ([10, 5, 30, 129], "boxes: box 1 [10, 5, 30, 129] lies outside the 256x128 image"),
        ([30, 5, 10, 40], "boxes: box 1 [30, 5, 10, 40] is empty or inverted (needs x0 < x1 and y0 < y1)"),
        ([10, 5, 10, 40], "boxes: box 1 [10, 5, 10, 40] is empty or inverted (needs x0 < x1 and y0 < y1)"),
        ([10, float("nan"), 30, 40], "boxes: box 1 [10, nan, 30, 40] holds a null or NaN"),
        ([10, None, 30, 40], "boxes: box 1 [10, None, 30, 40] holds a null or NaN"),
        ([10, 5, 30], "boxes: box 1 has 3 numbers, expected 4 [x0, y0, x1, y1]"),
        (None, "boxes: box 1 is null"),
    ],
)
def test_bad_boxes_are_row_errors_that_spare_other_rows(box, reason):
    images = [png_grey(128, 256), png_grey(128, 256), png_grey(128, 256)]
    rois = [[[0, 0, 128, 64]], [[0, 0, 8, 8], box], [[128, 64, 256, 128]]]
    settings = DecodeSettings((32, 64))
    decoded = decode_batch(raw(images, rois, "boxes"), settings)
    assert decoded.errors == [None, reason, None]
    alone = decode_batch(raw([images[0], images[2]], [rois[0], rois[2]], "boxes"), settings)
    np.testing.assert_array_equal(decoded.images[[0, 2]], alone.images)
    np.testing.assert_array_equal(decoded.masks[[0, 2]], alone.masks)
    assert not decoded.images[1].any() and not decoded.masks[1].any()
    assert list(decoded.has_roi) == [True, False, True]


def test_null_empty_and_all_zero_rois_mean_no_roi():
    settings = DecodeSettings((16, 16))
    images = [png_grey(16, 16)] * 3
    boxes = decode_batch(raw(images, [None, [], [[0, 0, 4, 4]]], "boxes"), settings)
    assert list(boxes.has_roi) == [False, False, True] and boxes.errors == [None] * 3
    masks = decode_batch(raw(images, [None, mask_png(np.zeros((16, 16))), mask_png(np.ones((16, 16)))], "mask"),
                         settings)
    assert list(masks.has_roi) == [False, False, True] and masks.errors == [None] * 3
    assert not masks.masks[:2].any()
    none = decode_batch(raw(images), settings)
    assert not none.has_roi.any() and none.masks.shape == (3, 16, 16)


# ---------------------------------------------------------------- row errors


def test_bad_image_bytes_are_row_errors_that_spare_other_rows():
    good = png_grey(12, 16)
    bmp = BytesIO()
    Image.fromarray(gradient(12, 16)).save(bmp, format="BMP")
    bad = {
        b"definitely not an image": "image: cannot identify image file (not PNG, JPEG or DICOM)",
        bmp.getvalue(): "image: cannot identify image file (not PNG, JPEG or DICOM)",
        good[: len(good) // 2]: "image: corrupt image data",
        b"": "image: empty (0 bytes)",
        None: "image: missing (null)",
        b"\0" * 128 + b"DICMgarbage": "image: DICOM file has no pixel data",
    }
    settings = DecodeSettings((12, 16))
    reference = decode_batch(raw([good]), settings).images[0]
    for data, reason in bad.items():
        decoded = decode_batch(raw([good, data, good]), settings)
        assert decoded.errors[0] is None and decoded.errors[2] is None
        assert decoded.errors[1].startswith(reason), (reason, decoded.errors[1])
        assert not decoded.images[1].any()
        np.testing.assert_array_equal(decoded.images[0], reference)
        np.testing.assert_array_equal(decoded.images[2], reference)
    assert list(decoded.ok) == [True, False, True]


def test_bad_mask_bytes_say_what_is_wrong():
    good = png_grey(12, 16)
    mask = mask_png(np.ones((12, 16), bool))
    bad = {
        encode_jpeg(gradient(12, 16)): "mask: not a PNG image (the bytes are a JPEG image); masks must be PNG",
        b"definitely not a mask": "mask: not a PNG image (21 bytes in no known image format, starting 64 65 66",
        mask[:40]: "mask: corrupt or truncated PNG (40 bytes)",
        b"": "mask: empty (0 bytes)",
        np.zeros((4, 4), np.uint8).tobytes(): "mask: not a PNG image (16 bytes in no known image format",
    }
    for data, reason in bad.items():
        decoded = decode_batch(raw([good, good], [data, mask], "mask"), DecodeSettings((12, 16)))
        assert decoded.errors[0].startswith(reason), (reason, decoded.errors[0])
        assert "object at 0x" not in decoded.errors[0] and decoded.errors[1] is None
    # A corrupt PNG inside (not just cut short): Pillow's reason, without its '<_io.BytesIO object at 0x...>'.
    broken = bytearray(mask)
    broken[40:60] = b"\xff" * 20
    error = decode_batch(raw([good], [bytes(broken)], "mask"), DecodeSettings((12, 16))).errors[0]
    assert error.startswith("mask: corrupt") and "object at 0x" not in error, error


def test_paths_are_checked_again_at_decode_time(tmp_path):
    pool = tmp_path / "pool"
    (pool / "images").mkdir(parents=True)
    (pool / "images" / "a.png").write_bytes(png_grey(value=50))
    (pool / "images" / "b.png").write_bytes(png_grey(value=60))
    spec = open_pool(write_pool(pool / "p.parquet", {"id": ["a", "b"], "image_path": ["images/a.png", "images/b.png"]}))
    # After validation, b.png is swapped for a symlink leaving the folder.
    (tmp_path / "outside.png").write_bytes(png_grey(value=70))
    (pool / "images" / "b.png").unlink()
    (pool / "images" / "b.png").symlink_to(tmp_path / "outside.png")
    decoded = decode_batch(next(spec.iter_batches(2)), DecodeSettings((4, 4)))
    assert decoded.errors[0] is None and decoded.images[0, 0, 0, 0] == np.float32(50 / 255)
    assert decoded.errors[1].startswith("image: 'images/b.png' resolves to") and "outside" in decoded.errors[1]


def test_mask_paths_are_read_relative_to_the_parquet_folder(tmp_path):
    pool = tmp_path / "pool"
    (pool / "m").mkdir(parents=True)
    mask = np.zeros((16, 16), bool)
    mask[2:5, 3:9] = True
    (pool / "m" / "a.png").write_bytes(mask_png(mask))
    spec = open_pool(write_pool(pool / "p.parquet", {"id": ["a", "b"], "image": [png_grey()] * 2,
                                                     "mask_path": ["m/a.png", None]}))
    decoded = decode_batch(next(spec.iter_batches(2)), DecodeSettings((16, 16)))
    np.testing.assert_array_equal(decoded.masks[0], mask.astype(np.uint8))
    assert list(decoded.has_roi) == [True, False]


def test_decode_batch_and_its_arguments_pickle():
    batch = raw([png_grey()])
    settings = DecodeSettings((16, 16), 3, (8, 8))
    assert pickle.loads(pickle.dumps(decode_batch)) is decode_batch
    decoded = pickle.loads(pickle.dumps(decode_batch(pickle.loads(pickle.dumps(batch)),
                                                     pickle.loads(pickle.dumps(settings)))))
    assert decoded.images.shape == (1, 3, 16, 16) and decoded.masks.shape == (1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_size=(0, 4)), "input_size"),
        (dict(input_size=224), "input_size"),
        (dict(input_size=(4, 4), in_channels=2), "in_channels"),
        (dict(input_size=(4, 4), mask_size=(4,)), "mask_size"),
    ],
)
def test_decode_settings_refuse_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecodeSettings(**kwargs)


def test_mask_size_defaults_to_input_size():
    assert DecodeSettings((10, 20)).mask_hw == (10, 20)
    assert DecodeSettings([10, 20], mask_size=[5, 6]).mask_hw == (5, 6)


# ---------------------------------------------------------------- a real pool


@pytest.mark.skipif(not FIGSHARE.exists(), reason=f"the real data set is not here ({FIGSHARE.resolve()}); see "
                    "shared/data/DATASETS.md")
def test_figshare_brain_tumor_pool_opens_and_decodes():
    spec = open_pool(FIGSHARE)
    assert spec.num_rows == 3064 and spec.roi_column == "mask" and "label" in spec.columns
    batch = next(spec.iter_batches(8, start_batch=100, columns=["label", "cv_fold"]))
    assert batch.start_row == 800
    decoded = decode_batch(batch, DecodeSettings((224, 224), 3, mask_size=(56, 56)))
    assert decoded.errors == [None] * 8
    assert decoded.has_roi.all()
    assert 0.0 <= decoded.images.min() and decoded.images.max() <= 1.0 and decoded.images.std() > 0.05
    assert set(decoded.extra["label"]) <= {"meningioma", "glioma", "pituitary"}
    assert all(1 <= f <= 5 for f in decoded.extra["cv_fold"])
    area = decoded.masks.reshape(8, -1).mean(axis=1)
    assert (area > 0).all() and (area < 0.2).all()  # tumours cover a few per cent of a slice


@pytest.mark.parametrize("seed", range(10))
def test_a_lesion_smaller_than_a_cell_of_the_grid_never_vanishes(seed):
    """A 5 x 5 lesion of a 1024 x 1024 mask, at 128 x 128: nearest neighbour alone hits or misses it depending on
    where it lies; the mask keeps the cell it falls in. A larger mask resizes exactly as nearest neighbour."""
    from egal.pool.rois import mask_from_boxes, resize_nearest

    rng = np.random.default_rng(seed)
    y, x = rng.integers(0, 1019, size=2)
    mask = np.zeros((1024, 1024), np.uint8)
    mask[y:y + 5, x:x + 5] = 1
    small = resize_nearest(mask, (128, 128))
    assert small.sum() >= 1 and small[(y + 2) // 8, (x + 2) // 8] == 1
    box = [[float(x), float(y), float(x) + 5, float(y) + 5]]
    assert mask_from_boxes(box, (1024, 1024), (128, 128)).sum() >= 1
    thin = mask_from_boxes([[0.0, float(y), 1024.0, float(y) + 1]], (1024, 1024), (128, 128))
    assert thin.sum() == 128  # a line across the image stays a line, one row high
    big = np.zeros((1024, 1024), np.uint8)
    big[100:400, 200:600] = 1
    rows = np.minimum(((np.arange(128) + 0.5) * 8).astype(int), 1023)
    np.testing.assert_array_equal(resize_nearest(big, (128, 128)), big[rows[:, None], rows[None, :]])


def test_a_dicom_whose_window_cannot_be_applied_is_a_row_error():
    from egal.pool.dicom import read_dicom
    from egal.pool.errors import RowError

    data = encode_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8), window=(100.0, 0.0))  # width 0
    with pytest.raises(RowError, match="rescale or window cannot be applied"):
        read_dicom(data)


def _zero_png(width: int, height: int, mode: str = "L") -> bytes:
    """A PNG of width x height zero pixels written row by row (a few hundred KB however large)."""
    import struct
    import zlib

    channels = {"L": 1, "RGB": 3}[mode]
    raw = zlib.compress(b"".join(b"\x00" * (width * channels + 1) for _ in range(height)), 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, {"L": 0, "RGB": 2}[mode], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_an_image_or_mask_larger_than_egal_decodes_is_refused_from_its_header():
    import resource

    from egal.pool.errors import RowError
    from egal.pool.images import read_image
    from egal.pool.limits import MAX_PIXELS
    from egal.pool.rois import read_mask_png

    big = _zero_png(7000, 6000)  # 42 million pixels, 120 KB
    assert 7000 * 6000 > MAX_PIXELS and len(big) < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RowError, match=r"image is 7000 x 6000 pixels \(42 million\), above the 40 million egal "
                                       r"decodes .*refused unread"):
        read_image(big, 1)
    with pytest.raises(RowError, match=r"mask is 7000 x 6000 pixels"):
        read_mask_png(big)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing decoded
    assert read_image(_zero_png(600, 400, "RGB"), 3).shape == (3, 400, 600)  # below the limit: decoded


def test_a_dicom_larger_than_egal_decodes_is_refused_before_its_pixels():
    import pydicom

    from egal.pool.errors import RowError
    from egal.pool.images import read_image

    ds = pydicom.dcmread(BytesIO(encode_dicom(np.zeros((4, 4), np.uint16), bits_stored=12)))
    ds.Rows, ds.Columns = 8000, 8000  # what the header says; the pixels are never read
    out = BytesIO()
    ds.save_as(out)
    with pytest.raises(RowError, match=r"DICOM image is 8000 x 8000 pixels \(64 million\)"):
        read_image(out.getvalue(), 1)


def test_a_path_with_a_nul_character_is_refused_not_a_crash(tmp_path):
    from egal.pool.errors import PathRefused
    from egal.pool.paths import resolve_inside

    with pytest.raises(PathRefused, match="contains a NUL character"):
        resolve_inside(str(tmp_path), "imgs/a.png\0x")


def _deflated_dicom(stored: np.ndarray) -> bytes:
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(BytesIO(encode_dicom(stored)))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_deflated_dicom_decodes_and_one_that_inflates_to_gigabytes_is_refused_unread():
    import resource
    import struct
    import zlib

    from egal.pool.dicom import MAX_INFLATED_BYTES, _deflated_data_start
    from egal.pool.errors import RowError
    from egal.pool.images import read_image
    from egal.pool.limits import MAX_PIXELS

    stored = np.arange(64, dtype=np.uint16).reshape(8, 8)
    small = _deflated_dicom(stored)
    np.testing.assert_allclose(read_image(small, 1)[0], stored / 63.0, atol=1e-6)
    # The same file meta, then a deflate stream of 1 GB of zeros: about 1 MB on disk. pydicom would inflate it
    # whole before anything else is read.
    start = _deflated_data_start(small, force=False)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(2**24)
    body = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()
    bomb = small[:start] + body
    assert 64 * len(zeros) > MAX_INFLATED_BYTES > MAX_PIXELS * 3 * 2  # the largest image egal takes fits
    assert len(bomb) < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RowError, match=r"deflated DICOM data set inflates to more than 256 MiB, above what an image "
                                       r"of 40 million pixels needs .*decompression bomb"):
        read_image(bomb, 1)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    with pytest.raises(RowError, match=r"deflated data set is corrupt"):
        read_image(small[:start] + b"\xff" * 64, 1)
    # Found as pydicom finds it (its own header readers): without the preamble, after a command set.
    with pytest.raises(RowError, match=r"inflates to more than 256 MiB"):
        read_image(bomb[132:], 1)
    command_set = struct.pack("<HHI", 0x0000, 0x0100, 2) + b"\x01\x00"  # (0000,0100), implicit VR
    np.testing.assert_allclose(read_image(small[:start] + command_set + small[start:], 1)[0], stored / 63.0,
                               atol=1e-6)


def test_a_deflated_dicom_is_refused_when_pydicom_lacks_the_readers_that_bound_its_inflation(monkeypatch):
    # The bounded inflate finds the data set with two private pydicom readers. A pydicom that renamed them must
    # not switch the check off (the deflated file then went to pydicom unchecked): deflated DICOMs are refused,
    # the rest decode as before.
    import egal.pool.dicom as dicom
    from egal.pool.errors import RowError
    from egal.pool.images import read_image

    stored = np.arange(64, dtype=np.uint16).reshape(8, 8)
    assert read_image(_deflated_dicom(stored), 1).shape == (1, 8, 8)  # with the readers pydicom has
    monkeypatch.setattr(dicom, "PYDICOM_HEADER_READERS", ("_read_file_meta_info_renamed", "_read_command_set_elements"))
    with pytest.raises(RowError, match=r"a deflated DICOM, which this pydicom \(3\.[0-9.]+\) gives egal no way to "
                                       r"inflate in bounded pieces"):
        read_image(_deflated_dicom(stored), 1)
    np.testing.assert_allclose(read_image(encode_dicom(stored), 1)[0], stored / 63.0, atol=1e-6)



def _edited_dicom(**elements) -> bytes:
    import pydicom

    ds = pydicom.dcmread(BytesIO(encode_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8))))
    for name, value in elements.items():
        setattr(ds, name, value)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _without(element: str) -> bytes:
    import pydicom

    ds = pydicom.dcmread(BytesIO(encode_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8))))
    delattr(ds, element)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_what_score_refuses_from_the_header_the_header_reader_refuses_too():
    # egal pool info and the importers read headers only (egal.importers.imaging.read_header): a damaged header
    # element was a traceback that stopped `pool info` for the whole pool, a deflated bomb was inflated whole
    # (1.4 GB for a 612 KB file), and a 60000 x 60000 DICOM, several frames or PALETTE COLOR passed as fine
    # although egal score marks them as errors.
    import zlib

    from egal.importers.imaging import read_header
    from egal.pool.dicom import _deflated_data_start
    from egal.pool.errors import RowError
    from egal.pool.images import read_image

    cases = {
        "empty SamplesPerPixel": (_edited_dicom(SamplesPerPixel=None), r"\(0028,0002\) SamplesPerPixel is missing"),
        "no SamplesPerPixel": (_without("SamplesPerPixel"),
                               r"\(0028,0002\) SamplesPerPixel is missing"),
        "two samples": (_edited_dicom(SamplesPerPixel=2), r"SamplesPerPixel is 2: it must be 1 or 3"),
        "60000 x 60000": (_edited_dicom(Rows=60000, Columns=60000), "60000 x 60000 pixels"),
        "two frames": (_edited_dicom(NumberOfFrames=2), r"multi-frame DICOM \(2 frames\)"),
        "palette": (_edited_dicom(PhotometricInterpretation="PALETTE COLOR"), "'PALETTE COLOR' is not supported"),
    }
    small = _deflated_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8))
    start = _deflated_data_start(small, force=False)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    cases["deflated bomb"] = (small[:start] + b"".join(packer.compress(bytes(2**24)) for _ in range(32))
                              + packer.flush(), "decompression bomb")
    for data, reason in cases.values():
        with pytest.raises(RowError, match=reason):
            read_header(data)
        with pytest.raises(RowError):  # and egal score refuses it too (the two agree)
            read_image(data, 1)
    # A 12-bit JPEG (start of frame SOF1, precision 12) is named as a JPEG that is not decoded, not "not a JPEG".
    baseline = encode_jpeg(np.full((8, 8), 100, np.uint8))
    sof0 = baseline.index(b"\xff\xc0")
    twelve = baseline[:sof0] + b"\xff\xc1" + baseline[sof0 + 2:sof0 + 4] + b"\x0c" + baseline[sof0 + 5:]
    for reader in (read_header, lambda data: read_image(data, 1)):
        with pytest.raises(RowError, match="a 12-bit JPEG, which is not decoded"):
            reader(twelve)
        with pytest.raises(RowError, match=r"^cannot identify image file \(not PNG, JPEG or DICOM\)$"):
            reader(b"\xff\xd8\xff" + b"junk" * 10)  # the JPEG marker alone names no kind of JPEG
        # The frame header is found by walking the segments: an Exif thumbnail's 8-bit SOF0 or a long ICC profile
        # before it does not hide a 12-bit frame, and random bytes after FF D8 FF name no kind (they named
        # "218-bit, arithmetic-coded" JPEGs).
        app1 = b"\xff\xe1" + (2 + len(baseline)).to_bytes(2, "big") + baseline
        app2 = b"\xff\xe2" + (2 + 60000).to_bytes(2, "big") + bytes(60000)
        with pytest.raises(RowError, match="a 12-bit JPEG"):
            reader(twelve[:2] + app1 + app2 * 3 + twelve[2:])
        # Lossless JPEG of any precision (10 and 14 bits are common in medical imaging) is named; padding between
        # segments, which decoders skip, hides nothing.
        lossless14 = baseline[:sof0] + b"\xff\xc3" + baseline[sof0 + 2:sof0 + 4] + b"\x0e" + baseline[sof0 + 5:]
        with pytest.raises(RowError, match="a 14-bit, lossless JPEG"):
            reader(lossless14)
        app0_end = 4 + int.from_bytes(twelve[4:6], "big")
        with pytest.raises(RowError, match="a 12-bit JPEG"):
            reader(twelve[:app0_end] + b"\x00\x00" + twelve[app0_end:])
        # A JPEG-LS frame header, and random bytes after FF D8 (no FF after it: Pillow's own rule) or with a
        # plausible-looking marker (they named "5-bit, lossless, arithmetic-coded" JPEGs).
        with pytest.raises(RowError, match="a JPEG-LS image, which is not decoded"):
            reader(baseline[:sof0] + b"\xff\xf7" + baseline[sof0 + 2:])
        with pytest.raises(RowError, match=r"\(not PNG, JPEG or DICOM\)$"):
            reader(b"\xff\xd8" + b"\x00" * 10 + b"\xff\xcb\x00\x0b\x05" + b"\x00" * 20)
        rng = np.random.default_rng(0)
        for _ in range(20):
            with pytest.raises(RowError) as refused:
                reader(b"\xff\xd8\xff" + rng.bytes(4096))
            assert "-bit" not in str(refused.value) and "arithmetic" not in str(refused.value)


def test_dicom_errors_are_one_line_without_object_addresses():
    from egal.pool.dicom import one_line

    assert one_line("missing dependencies:\n\tgdcm - requires gdcm\n  pillow: cannot identify image file "
                    "<_io.BytesIO object at 0x7efb12345678>") == (
        "missing dependencies: gdcm - requires gdcm pillow: cannot identify image file")
    assert one_line("value <3 and object at 0x7f> kept?") == "value <3 and object at 0x7f> kept?"


def test_a_voi_lut_sequence_decodes_without_pydicoms_float_input_caution():
    # egal hands apply_voi_lut the modality LUT's output as float on purpose; pydicom's caution about float input
    # printed two lines to stderr per row (five with workers).
    import warnings

    import pydicom
    from pydicom.dataset import Dataset

    from egal.pool.images import read_image

    ds = pydicom.dcmread(BytesIO(encode_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8))))
    lut = Dataset()
    lut.add_new((0x0028, 0x3002), "US", [64, 0, 16])  # LUTDescriptor: 64 entries from 0, 16-bit
    lut.add_new((0x0028, 0x3006), "US", list(range(0, 64 * 1000, 1000)))  # LUTData: a linear ramp
    ds.VOILUTSequence = [lut]
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = read_image(out.getvalue(), 1)[0]
    np.testing.assert_allclose(decoded, np.arange(64).reshape(8, 8) / 63.0, atol=1e-6)  # a linear LUT: the ramp
