import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from digitpairs import UserError
from digitpairs.data import images, mnist
from digitpairs.data.pairs import round_data
from digitpairs.engine.training import train
from digitpairs.model.weights import from_bytes
from digitpairs.predict.answer import probabilities
from digitpairs.predict.kept import build
from digitpairs.spec.config import Config
from digitpairs.spec.registry import arch_config, get_arch


def seven(w=300, h=240, ink=20, paper=235) -> np.ndarray:
    """A thick dark 7 on light paper, off-centre, as a uint8 (H, W) array."""
    im = Image.new("L", (w, h), paper)
    ImageDraw.Draw(im).line([(60, 40), (170, 40), (100, 200)], fill=ink, width=18)
    return np.asarray(im)


def test_a_drawing_is_prepared_as_mnist_was(tmp_path):
    Image.fromarray(seven()).save(tmp_path / "7.png")
    x = images.read(tmp_path / "7.png")
    assert x.shape == (28, 28) and x.dtype == torch.float32
    assert x.max() == 255 and x.min() == 0  # bright ink on black
    rows, cols = np.flatnonzero(x.numpy().any(1)), np.flatnonzero(x.numpy().any(0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20  # fitted into 20x20, its aspect ratio kept
    ys, xs = np.mgrid[:28, :28]
    assert abs((x.numpy() * ys).sum() / x.sum() - 14) <= 0.5 and abs((x.numpy() * xs).sum() / x.sum() - 14) <= 0.5


def renderings(a: np.ndarray) -> dict[str, Image.Image]:
    """The same drawing in other modes and polarities."""
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., 3] = 255 - a  # black ink, opacity where the ink is: transparent paper
    return {"light on dark": Image.fromarray(255 - a), "rgb": Image.fromarray(a).convert("RGB"),
            "transparent": Image.fromarray(rgba, "RGBA"), "palette": Image.fromarray(a).convert("P"),
            "16 bit": Image.fromarray(a.astype(np.uint16) * 257), "bilevel": Image.fromarray(a).convert("1", dither=Image.Dither.NONE)}


@pytest.mark.parametrize("name", ["light on dark", "rgb", "transparent", "palette", "16 bit", "bilevel", "jpeg",
                                  "large"])
def test_every_mode_and_polarity_reads_alike(tmp_path, name):
    a = seven()
    Image.fromarray(a).save(tmp_path / "ref.png")
    if name == "jpeg":
        Image.fromarray(a).convert("RGB").save(tmp_path / "x.jpg", quality=85)
        path = tmp_path / "x.jpg"
    elif name == "large":  # 3000 x 2400: shrunk by a whole factor before the float work
        path = tmp_path / "x.png"
        Image.fromarray(a).resize((3000, 2400), Image.Resampling.BICUBIC).save(path)
    else:
        path = tmp_path / "x.png"
        renderings(a)[name].save(path)
    assert (images.read(path) - images.read(tmp_path / "ref.png")).abs().mean() < 4  # of 255


@pytest.mark.parametrize("content, match", [(None, "No such file"), (b"", "cannot read"),
                                            (b"hello, not an image", "not an image"),
                                            ("truncated", "cannot read"), ("blank", "holds no ink"),
                                            ("fifo", "not a plain file"), ("folder", "not a plain file")])
def test_a_bad_image_is_one_line(tmp_path, content, match):
    path = tmp_path / "x.png"
    if content == "fifo":  # reading it would wait for a writer forever
        os.mkfifo(path)
    elif content == "folder":
        path.mkdir()
    elif content == "truncated":
        Image.fromarray(seven()).save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "blank":
        Image.new("L", (50, 50), 200).save(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as e:
        images.read(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_prepare_pools_for_size_14_and_normalises():
    x = torch.zeros(28, 28)
    x[4:8, 6:10] = 255
    out = images.prepare(x, Config(size=14), (10.0, 2.0))
    assert out.shape == (14, 14)
    assert out[2, 3] == (255 - 10) / 2 and out[0, 0] == -5
    assert torch.equal(images.prepare(x, Config(), (0.0, 1.0)), x)


@pytest.fixture(scope="module")
def reader(real_data_dir):
    """A model trained in seconds on real MNIST (ws_bn_aug_bayes's recipe on 700 pairs, 6 epochs; 0.98 of the test
    digits read right): images (N, 28, 28) -> the digit it reads in each."""
    arch = get_arch("ws_bn_aug_bayes")
    cfg = arch_config(arch, Config(swap=False)).replace(epochs=6, n_pairs=700, n_test=100)
    arch = dataclasses.replace(arch, extra={})  # its own settings are in cfg
    data = round_data(mnist.load(real_data_dir, log=lambda *a: None), 0, cfg.n_pairs, cfg.n_test)
    [r] = train(arch, cfg, [data], [0], [0], groups=[1])
    net = build(arch, cfg, from_bytes(r.weights))

    def read(xs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack([images.prepare(x, cfg, r.norm) for x in xs])
        return probabilities(net, cfg, torch.stack([x, x], 1))[1][:, 0].argmax(-1)
    return read


def on_canvas(a: np.ndarray, rng) -> Image.Image:
    canvas = np.zeros((64, 90), np.uint8)
    y, x = rng.integers(0, 64 - 28), rng.integers(0, 90 - 28)
    canvas[y:y + 28, x:x + 28] = a
    return Image.fromarray(canvas)


RENDERINGS = {
    "as they are": lambda a, rng: Image.fromarray(a),
    "inverted": lambda a, rng: Image.fromarray(255 - a),
    "enlarged": lambda a, rng: Image.fromarray(a).resize((112, 112), Image.Resampling.BICUBIC),
    "off-centre": on_canvas,
    "jpeg, enlarged, dark on light": lambda a, rng: Image.fromarray(255 - a).convert("RGB").resize((200, 200)),
}


@pytest.mark.slow
def test_mnist_digits_read_from_files_as_from_memory(tmp_path, real_data_dir, reader):
    """The issue's test: 100 MNIST test digits written as files in several renderings; the digit read from each file
    agrees with the digit the same model reads from the in-memory image for at least 97% of them, in each."""
    digits = mnist.load(real_data_dir, log=lambda *a: None)["test_images"][:100]
    truth = reader([torch.from_numpy(a.astype(np.float32)) for a in digits])
    rng = np.random.default_rng(0)
    for name, render in RENDERINGS.items():
        paths = []
        for i, a in enumerate(digits):
            paths.append(tmp_path / f"{name.split(',')[0]}-{i}.{'jpg' if 'jpeg' in name else 'png'}")
            render(a, rng).save(paths[-1])
        agree = (reader([images.read(p) for p in paths]) == truth).float().mean().item()
        assert agree >= 0.97, f"{name}: {agree:.2f}"


def test_a_huge_photo_is_read_without_a_warning(tmp_path, recwarn):
    path = tmp_path / "big.jpg"
    big = np.full((9000, 10000), 255, np.uint8)  # 90 megapixels: beyond Pillow's bomb warning (89 M); a JPEG
    big[3000:6000, 4000:6000] = 0  # decodes at 1/8 of that (draft)
    Image.fromarray(big).save(path, quality=80)
    assert images.read(path).shape == (28, 28)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_an_image_in_a_folder_it_may_not_read_is_one_line(tmp_path, monkeypatch):
    """As a user (not root) meets a folder without search permission: stat itself fails."""
    path = tmp_path / "locked" / "x.png"

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "stat", denied)
    with pytest.raises(UserError, match="cannot read the image"):  # then open says why
        images.read(path)


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path):
    """A PNG of a few hundred kB may say 13000 x 13000 pixels (about 500 MB decoded, RGB): refused from its header
    alone, in one line; a large JPEG photo decodes at its decoder's smaller scale (draft) and reads as usual."""
    from PIL import Image, ImageDraw

    big = Image.new("L", (6000, 5000), 255)
    ImageDraw.Draw(big).line([(3000, 1000), (3000, 4000)], fill=0, width=250)
    big.save(tmp_path / "bomb.png")
    with pytest.raises(UserError, match=r"is 6000 x 5000 pixels, more than this reads \(25 million\)") as e:
        images.read(tmp_path / "bomb.png")
    assert "\n" not in str(e.value)
    big.convert("RGB").save(tmp_path / "photo.jpg", quality=90)
    with Image.open(tmp_path / "photo.jpg") as im:
        images.decode_small(im, tmp_path / "photo.jpg")
        assert max(im.size) <= 2 * images.MAX_SIDE and im.size[0] * im.size[1] < 6000 * 5000 / 4
    digit = images.read(tmp_path / "photo.jpg")
    assert digit.shape == (28, 28) and digit.max() == 255


def test_a_phones_mpo_photo_decodes_small_as_a_jpeg_does(tmp_path):
    """Phones save photos as MPO (a JPEG with more frames): Pillow opens it as MpoImageFile, decoded in draft mode
    too, not refused for its size."""
    from PIL import Image, ImageDraw

    big = Image.new("RGB", (6000, 5000), (250, 250, 245))  # 30 megapixels: refused unless decoded small
    ImageDraw.Draw(big).line([(3000, 1000), (3000, 4000)], fill=(10, 10, 10), width=250)
    big.save(tmp_path / "photo.mpo", format="MPO", quality=85, save_all=True, append_images=[big.resize((600, 500))])
    with Image.open(tmp_path / "photo.mpo") as im:
        assert im.format == "MPO"
    assert images.read(tmp_path / "photo.mpo").shape == (28, 28)
