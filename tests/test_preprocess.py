"""Preprocessing against straightforward references: Pillow + naive numpy, and the tokenizers library."""

from __future__ import annotations

import io

import numpy as np
import pytest

import infercore as ic
from infercore.batching import Batcher
from infercore.errors import InputSpecError, ModelLoadError
from infercore.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Decode,
    ImagePipeline,
    Letterbox,
    Normalize,
    Resize,
    TextPipeline,
    ToCHW,
    ToDType,
    center_crop,
    letterbox,
    normalize,
    resize,
)
from tests import onnx_models as m

Image = pytest.importorskip("PIL.Image")


def _image(h: int = 37, w: int = 53, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _naive(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pillow resize, then (x / 255 - mean) / std written out per channel, then HWC -> CHW."""
    r = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR)).astype(np.float64)
    out = np.empty((3, h, w), np.float64)
    for c in range(3):
        out[c] = (r[:, :, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    return out.astype(np.float32)


# -- functions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(20, 30), (64, 80), (37, 53)])
def test_resize_matches_pillow_bilinear(size):
    img = _image()
    want = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
    np.testing.assert_array_equal(resize(img, size), want)
    out = np.empty((*size, 3), np.uint8)
    assert resize(img, size, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_resize_float_and_shorter_side():
    img = _image().astype(np.float32)
    got = resize(img, (16, 24))
    for c in range(3):
        want = np.asarray(Image.fromarray(img[:, :, c], "F").resize((24, 16), Image.BILINEAR))
        np.testing.assert_array_equal(got[:, :, c], want)
    assert resize(_image(37, 53), 20).shape == (
        20,
        int(20 * 53 / 37),
        3,
    )  # shorter side, torchvision truncation


def _pillow_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """What Pillow itself makes of the array: one image where Pillow has a mode for it, else per channel."""
    c = img.shape[2]
    if img.dtype == np.uint8 and c <= 4:
        res = np.asarray(Image.fromarray(img[:, :, 0] if c == 1 else img).resize((w, h), Image.BILINEAR))
        return res.reshape(h, w, c)
    return np.stack(
        [np.asarray(Image.fromarray(img[:, :, k]).resize((w, h), Image.BILINEAR)) for k in range(c)], axis=2
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6])
def test_resize_equals_pillow_for_every_channel_count_and_dtype(channels, dtype):
    rng = np.random.default_rng(channels)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        img = rng.integers(max(info.min, -40000), min(info.max, 70000), (40, 60, channels), endpoint=True)
        img = img.astype(dtype)
    else:
        img = (rng.random((40, 60, channels)) * 300).astype(dtype)
    for size in ((17, 23), (53, 97)):  # shrinking (antialiased) and enlarging
        got = resize(img, size)
        assert got.dtype == img.dtype and got.shape == (*size, channels)
        np.testing.assert_array_equal(got, _pillow_resize(img, *size))


def test_decode_la_then_resize_equals_pillow_la_resize():
    la = Image.fromarray(_image()).convert("LA")
    buf = io.BytesIO()
    la.save(buf, format="PNG")
    out = ImagePipeline([Decode("LA"), Resize((17, 23))], input="x")(buf.getvalue())["x"][0]
    np.testing.assert_array_equal(out, np.asarray(la.resize((23, 17), Image.BILINEAR)))


def test_resize_refuses_integers_beyond_int32():
    img = np.full((4, 4, 1), 2**40, np.int64)
    with pytest.raises(InputSpecError, match=r"int64.*float32"):
        resize(img, (2, 2))
    small = np.arange(16, dtype=np.int64).reshape(4, 4, 1) * 1000
    np.testing.assert_array_equal(
        resize(small, (3, 3))[:, :, 0],
        np.asarray(Image.fromarray(small[:, :, 0].astype(np.int32)).resize((3, 3), Image.BILINEAR)),
    )


def test_normalize_and_layout_match_naive_numpy():
    img = _image()
    want = np.stack([(img[:, :, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c] for c in range(3)], axis=2)
    np.testing.assert_allclose(normalize(img, IMAGENET_MEAN, IMAGENET_STD), want, atol=2e-6)
    chw = np.empty((3, *img.shape[:2]), np.float32)
    normalize(img, IMAGENET_MEAN, IMAGENET_STD, out=chw.transpose(1, 2, 0))  # written through a view
    np.testing.assert_allclose(chw, want.transpose(2, 0, 1), atol=2e-6)


def test_letterbox_places_the_scaled_image_and_reports_it():
    img = _image(40, 100)
    out, info = letterbox(img, (64, 64), color=114)
    scale = min(64 / 40, 64 / 100)
    nh, nw = round(40 * scale), round(100 * scale)
    top, left = (64 - nh) // 2, (64 - nw) // 2
    assert (info.scale, info.top, info.left, info.height, info.width) == (scale, top, left, nh, nw)
    want = np.full((64, 64, 3), 114, np.uint8)
    want[top : top + nh, left : left + nw] = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    np.testing.assert_array_equal(out, want)
    corners = info.to_original(np.array([[left, top], [left + nw, top + nh]]))
    np.testing.assert_allclose(corners, [[0, 0], [100, 40]], atol=1 / scale)  # within a rounded pixel


def test_center_crop_matches_torchvision_rule():
    img = _image(37, 53)
    top, left = round((37 - 20) / 2), round((53 - 30) / 2)
    np.testing.assert_array_equal(center_crop(img, (20, 30)), img[top : top + 20, left : left + 30])
    with pytest.raises(InputSpecError, match="at least"):
        center_crop(img, (40, 40))


# -- image pipeline --------------------------------------------------------------------------------
def _imagenet_pipe(h: int = 24, w: int = 32) -> ImagePipeline:
    return ImagePipeline(
        [Decode(), Resize((h, w)), Normalize(IMAGENET_MEAN, IMAGENET_STD), ToCHW()], input="x"
    )


def test_image_pipeline_from_bytes_matches_reference():
    imgs = [_image(seed=s) for s in range(3)]
    feeds = _imagenet_pipe()([_png(i) for i in imgs])
    assert feeds["x"].shape == (3, 3, 24, 32) and feeds["x"].dtype == np.float32
    for k, img in enumerate(imgs):
        np.testing.assert_allclose(feeds["x"][k], _naive(img, 24, 32), atol=2e-6)


def test_image_pipeline_fills_bound_inputs_in_place(tmp_path):
    from onnx import TensorProto

    eng = ic.load(m.identity(tmp_path / "id.onnx", TensorProto.FLOAT, shape=("b", 3, "h", "w")))
    pipe = _imagenet_pipe()
    img = _image(seed=5)
    with eng.bind({"x": (1, 3, 24, 32)}) as bound:
        buf = bound.inputs["x"]
        pipe.into(_png(img), bound)
        assert bound.inputs["x"] is buf
        bound.run()
        np.testing.assert_allclose(bound.outputs["y"][0], _naive(img, 24, 32), atol=2e-6)
        with pytest.raises(InputSpecError, match="bind the prepared shapes"):
            _imagenet_pipe(8, 8).into(img, bound)


def test_image_pipeline_letterbox_crop_dtype_and_meta():
    pipe = ImagePipeline([Letterbox((32, 32)), CenterCrop((16, 16)), ToCHW(), ToDType(np.float16)], input="x")
    img = _image(20, 40)
    prepared = pipe.prepare(img)
    assert prepared.meta[0]["letterbox"].scale == 0.8
    out = pipe(img)["x"]
    boxed, _ = letterbox(img, (32, 32))
    np.testing.assert_array_equal(out[0], center_crop(boxed, 16).transpose(2, 0, 1).astype(np.float16))
    assert pipe.dtypes == {"x": np.float16}
    with pytest.raises(ValueError, match="before"):
        ImagePipeline([ToCHW(), Resize(8)], input="x")
    with pytest.raises(InputSpecError, match="different sizes"):
        ImagePipeline([ToCHW()], input="x")([_image(8, 8), _image(9, 9)])


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (_image(20, 30)[:, :, 0], r"3 channel.*\(20, 30\) \(1 channels\)"),  # grayscale 2-D
        (np.dstack([_image(20, 30), _image(20, 30)[:, :, :1]]), r"\(20, 30, 4\) \(4 channels\)"),  # RGBA
        (_image(20, 30).transpose(2, 0, 1), r"\(3, 20, 30\).*looks CHW"),
    ],
)
def test_image_pipeline_names_the_input_when_channels_do_not_fit(image, match):
    with pytest.raises(InputSpecError, match=match) as e:
        _imagenet_pipe()(image)
    assert e.value.tensor == "x" and "input 'x'" in str(e.value)
    # without a Decode step the arrays reach Normalize, which says how many channels it needs
    pipe = ImagePipeline([Resize((8, 8)), Normalize(IMAGENET_MEAN, IMAGENET_STD), ToCHW()], input="x")
    with pytest.raises(InputSpecError, match=r"input 'x'.*Normalize has 3 mean/std values") as e:
        pipe(image)
    assert e.value.tensor == "x"
    with pytest.raises(InputSpecError, match=r"normalize: 3 mean/std values.*shape"):
        normalize(image, IMAGENET_MEAN, IMAGENET_STD)


def test_grayscale_pipeline_matches_pillow_and_numpy():
    gray = _image(20, 30)[:, :, 0]
    out = ImagePipeline([Decode("L"), Resize((8, 8)), Normalize(0.5, 0.25), ToCHW()], input="x")(gray)["x"]
    want = (np.asarray(Image.fromarray(gray).resize((8, 8), Image.BILINEAR)) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(out, want[None, None], atol=2e-6)


def test_image_pipeline_refuses_steps_that_cannot_fit_at_construction():
    with pytest.raises(ValueError, match="before ToCHW"):  # would normalize along the width
        ImagePipeline([Resize((8, 3)), ToCHW(), Normalize(IMAGENET_MEAN, IMAGENET_STD)], input="x")
    with pytest.raises(ValueError, match=r"Decode\('L'\) gives 1-channel images but Normalize has 3"):
        ImagePipeline([Decode("L"), Normalize(IMAGENET_MEAN, IMAGENET_STD)], input="x")
    with pytest.raises(ValueError, match="uint8"):
        ImagePipeline([Decode("F"), Normalize(0.5, 0.5)], input="x")
    with pytest.raises(ValueError, match="ToCHW is given twice"):
        ImagePipeline([ToCHW(), ToDType(np.float32), ToCHW()], input="x")
    with pytest.raises(ValueError, match="unknown image mode 'RBG'"):
        Decode("RBG")
    # one mean/std for every channel is fine after ToCHW too
    img = _image(10, 12)
    out = ImagePipeline([ToCHW(), Normalize(0.5, 0.25)], input="x")(img)["x"][0]
    np.testing.assert_allclose(out, (img.transpose(2, 0, 1) / 255.0 - 0.5) / 0.25, atol=2e-6)


def _every_size_taker(size):
    img = _image(20, 30)
    return (
        lambda: Resize(size),
        lambda: Letterbox(size),
        lambda: CenterCrop(size),
        lambda: resize(img, size),
        lambda: letterbox(img, size),
        lambda: center_crop(img, size),
    )


@pytest.mark.parametrize("size", ["16", True, 2.5, (5,), (1, 2, 3), (8, 2.0), None])
def test_sizes_of_the_wrong_type_are_refused(size):
    for call in _every_size_taker(size):
        with pytest.raises(ic.ArgumentError, match=r"^size: .*expected an int or a \(height, width\) pair of ints"):
            call()


@pytest.mark.parametrize("size", [0, -5, (0, 5), (5, -1)])
def test_sizes_that_are_not_positive_are_refused(size):
    for call in _every_size_taker(size):
        with pytest.raises(ic.ArgumentError, match=r"^size: .*must be positive"):
            call()


def test_numpy_integer_sizes_are_ints():
    img = _image(37, 53)
    np.testing.assert_array_equal(Resize(np.int64(20)).run(img, {}), resize(img, 20))
    np.testing.assert_array_equal(center_crop(img, np.int32(7)), center_crop(img, (7, 7)))


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (5, 5, 0), (0, 5)])
def test_empty_images_are_refused(shape):
    empty = np.zeros(shape, np.uint8)
    with pytest.raises(InputSpecError, match=r"input 'x': .*empty image"):
        _imagenet_pipe()(empty)
    for call in (lambda: resize(empty, 4), lambda: letterbox(empty, 4), lambda: center_crop(empty, 1)):
        with pytest.raises(InputSpecError, match="empty image"):
            call()


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        (0.5, 0.0, "^std: Normalize: must be non-zero"),
        (IMAGENET_MEAN, (0.2, 0.0, 0.2), "^std: Normalize: must be non-zero"),
        (0.5, 1e-45, "non-zero|too small"),
        (0.5, float("nan"), "^std: Normalize: must be finite"),
        (float("inf"), 0.5, "^mean: Normalize: must be finite"),
        ((0.5, 0.5), IMAGENET_STD, "mean has 2 values and std 3"),
        ([], 0.5, "one number per channel"),
    ],
)
def test_normalize_refuses_parameters_that_give_inf_or_nan(mean, std, match):
    with pytest.raises(ValueError, match=match):
        Normalize(mean, std)
    with pytest.raises(ValueError, match=match):
        normalize(_image(4, 4), mean, std)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_decode_turns_exif_rotated_photos_upright_when_asked(orientation):
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(_image(20, 40)).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    jpeg = buf.getvalue()
    stored = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB"))
    assert upright.shape == ((40, 20, 3) if orientation in (6, 8) else (20, 40, 3))
    # default: as stored, like Image.open and torchvision's loaders
    np.testing.assert_array_equal(Decode().run(jpeg, {}), stored)
    np.testing.assert_array_equal(Decode(exif_transpose=True).run(jpeg, {}), upright)
    pil = Image.open(io.BytesIO(jpeg))
    np.testing.assert_array_equal(Decode(exif_transpose=True).run(pil, {}), upright)
    assert pil.getexif()[0x0112] == orientation  # the caller's image is not changed
    pipe = ImagePipeline([Decode(exif_transpose=True), Resize((8, 4))], input="x")
    np.testing.assert_array_equal(
        pipe(jpeg)["x"][0], np.asarray(Image.fromarray(upright).resize((4, 8), Image.BILINEAR))
    )


def test_batcher_takes_raw_images(tmp_path):
    from onnx import TensorProto

    eng = ic.load(m.identity(tmp_path / "id.onnx", TensorProto.FLOAT, shape=("b", 3, "h", "w")))
    imgs = [_image(30 + s, 40 + 2 * s, seed=s) for s in range(12)]
    with Batcher(eng, max_batch_size=8, preprocess=_imagenet_pipe()) as b:
        outs = [f.result(10) for f in [b.submit(_png(i)) for i in imgs]]
        assert b.metrics.batches < 12
    for img, out in zip(imgs, outs, strict=True):
        np.testing.assert_allclose(out["y"][0], _naive(img, 24, 32), atol=2e-6)
    with pytest.raises(InputSpecError, match="float16"):
        Batcher(eng, preprocess=ImagePipeline([ToCHW(), ToDType(np.float16)], input="x"))


# -- text ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer_path():
    pytest.importorskip("tokenizers")
    from infercore.testing import models

    try:
        return models.minilm_tokenizer()
    except Exception as e:  # no package index here
        pytest.skip(f"MiniLM tokenizer unavailable: {e}")


TEXTS = [
    "infercore runs models",
    "A much longer sentence, with punctuation; it should land in a larger bucket than the short one above.",
    "ünïcödé and emoji 🙂 survive tokenization",
]


def test_text_pipeline_matches_tokenizers_padding(tokenizer_path):
    from tokenizers import Tokenizer

    pipe = TextPipeline(tokenizer_path, buckets=(16, 32, 64, 128))
    feeds = pipe(TEXTS)
    ref = Tokenizer.from_file(str(tokenizer_path))
    ref.no_padding()  # the file itself asks for fixed padding to 128
    longest = max(len(e.ids) for e in ref.encode_batch(TEXTS))
    bucket = next(b for b in (16, 32, 64, 128) if b >= longest)
    ref.enable_padding(length=bucket)
    ref.enable_truncation(128)
    enc = ref.encode_batch(TEXTS)
    np.testing.assert_array_equal(feeds["input_ids"], [e.ids for e in enc])
    np.testing.assert_array_equal(feeds["attention_mask"], [e.attention_mask for e in enc])
    np.testing.assert_array_equal(feeds["token_type_ids"], [e.type_ids for e in enc])
    assert all(a.dtype == np.int64 for a in feeds.values())
    assert pipe("short")["input_ids"].shape == (1, 16)
    assert pipe("word " * 500)["input_ids"].shape == (1, 128)  # truncated to the largest bucket
    with pytest.raises(InputSpecError, match="string"):
        pipe.prepare(42)


@pytest.mark.parametrize("max_length", [3, 4, 7])
def test_text_pipeline_truncates_to_short_max_length_like_tokenizers(tokenizer_path, max_length):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(tokenizer_path))
    ref.no_padding()
    ref.enable_truncation(max_length)
    pipe = TextPipeline(tokenizer_path, buckets=(), max_length=max_length)
    for raw in ("hello world, a few more words here", ("hello world", "and a pair of words")):
        want = ref.encode(*raw) if isinstance(raw, tuple) else ref.encode(raw)
        got = pipe(raw)["input_ids"]
        assert got.shape == (1, max_length)
        np.testing.assert_array_equal(got[0], want.ids)


@pytest.mark.parametrize("max_length", [0, 1, 2, -4])
def test_text_pipeline_refuses_max_length_shorter_than_the_special_tokens(tokenizer_path, max_length):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(tokenizer_path))
    single, pair = ref.num_special_tokens_to_add(False), ref.num_special_tokens_to_add(True)
    assert (single, pair) == (2, 3)  # [CLS] a [SEP] / [CLS] a [SEP] b [SEP]
    with pytest.raises(
        ic.ArgumentError, match=rf"^max_length: {max_length} .*2 special tokens to a text and 3 to a pair"
    ):
        TextPipeline(tokenizer_path, buckets=(), max_length=max_length)
    # without special tokens, one token is enough
    pipe = TextPipeline(tokenizer_path, buckets=(), max_length=1, add_special_tokens=False)
    assert pipe("hello world")["input_ids"].shape == (1, 1)
    with pytest.raises(ic.ArgumentError, match=r"^max_length: expected an int"):
        TextPipeline(tokenizer_path, buckets=(), max_length=True)


def test_text_pipeline_names_a_tokenizer_file_it_cannot_load(tmp_path):
    pytest.importorskip("tokenizers")
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(ModelLoadError, match=r"tokenizer file not found: .*nope/tokenizer\.json") as e:
        TextPipeline(missing)
    assert e.value.path == str(missing)
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"could not load tokenizer .*tokenizer\.json") as e:
        TextPipeline(broken)
    assert e.value.path == str(broken) and e.value.__cause__ is not None


def test_minilm_through_batcher_equals_direct_engine_run(tokenizer_path):
    from infercore.testing import models

    try:
        path = models.minilm()
    except Exception as e:
        pytest.skip(f"MiniLM unavailable: {e}")
    pipe = TextPipeline(tokenizer_path)
    texts = [t for t in TEXTS for _ in range(4)] + ["one more", "and another sentence here"]
    eng = ic.load(path, threads=1)
    direct = [eng.run(pipe(t))["embedding"] for t in texts]
    # grouped by bucket (exact shapes), and padded to share batches across lengths
    for pad in (False, ["sequence"]):
        with Batcher(
            lambda: ic.load(path, threads=1), instances=2, max_batch_size=8, preprocess=pipe, pad=pad
        ) as b:
            outs = [f.result(60)["embedding"] for f in [b.submit(t) for t in texts]]
        for got, want in zip(outs, direct, strict=True):
            assert got.shape == (1, 384)
            np.testing.assert_allclose(got, want, atol=2e-5)


def test_sizes_given_as_0d_numpy_arrays():
    from infercore.preprocess.image import Resize

    img = np.zeros((10, 20, 3), np.uint8)
    assert Resize(np.array(8)).size == Resize(8).size == 8
    assert Resize(np.array(8)).run(img, {}).shape == (8, 16, 3)
