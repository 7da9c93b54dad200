"""core.noreference (NIQE) against a literal re-reading of the MATLAB release, and core.dists (DISTS) against
the authors' DISTS_pytorch; the published MATLAB values are checked when their images are supplied."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from core import dists as dists_mod
from core import noreference as nr

# ----------------------------------------------------------------------------------------------------
# Independent NIQE: computequality.m / computefeature.m / estimateaggdparam.m written out with loops
# ----------------------------------------------------------------------------------------------------


def ref_window() -> np.ndarray:
    """fspecial('gaussian', 7, 7/6): exp(-(x^2 + y^2) / (2 s^2)), tiny values zeroed, normalised to sum 1."""
    x, y = np.meshgrid(np.arange(-3, 4), np.arange(-3, 4))
    h = np.exp(-(x**2 + y**2) / (2 * (7 / 6) ** 2))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def ref_mscn(img: np.ndarray) -> np.ndarray:
    """imfilter(..., 'replicate') as 49 shifted copies; I - mu summed as sum_k w_k (I - I_k), so a flat
    neighbourhood gives an exact zero (the value exact arithmetic gives)."""
    w, pad = ref_window(), np.pad(img, 3, mode="edge")
    h, wd = img.shape
    shifted = [(w[a, b], pad[a:a + h, b:b + wd]) for a in range(7) for b in range(7)]
    mu = sum(k * s for k, s in shifted)
    sigma = np.sqrt(np.abs(sum(k * s * s for k, s in shifted) - mu * mu))
    return sum(k * (img - s) for k, s in shifted) / (sigma + 1)


GAM = np.linspace(0.2, 10, 9801)  # 0.2:0.001:10
R_GAM = np.array([math.gamma(2 / g) ** 2 / (math.gamma(1 / g) * math.gamma(3 / g)) for g in GAM])


def ref_aggd(vec: np.ndarray) -> tuple[float, float, float]:
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt(np.mean(vec[vec < 0] ** 2)) if (vec < 0).any() else math.nan
        right = np.sqrt(np.mean(vec[vec > 0] ** 2)) if (vec > 0).any() else math.nan
        g = left / right
        rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
        rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = GAM[0] if math.isnan(rnorm) else GAM[np.argmin((R_GAM - rnorm) ** 2)]  # MATLAB min skips NaN
    c = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, left * c, right * c


def ref_features(block: np.ndarray) -> list[float]:
    a, bl, br = ref_aggd(block.ravel())
    feat = [a, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a, bl, br = ref_aggd((block * np.roll(block, shift, axis=(0, 1))).ravel())
        feat += [a, (br - bl) * math.gamma(2 / a) / math.gamma(1 / a), bl, br]
    return feat


def ref_cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + far


def ref_half(img: np.ndarray) -> np.ndarray:
    """imresize(img, 0.5), MATLAB's bicubic with antialiasing, one output pixel at a time along each axis."""
    def one_axis(x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        out = np.empty((n // 2,) + x.shape[1:])
        for i in range(1, n // 2 + 1):
            u = i / 0.5 + 0.5 * (1 - 1 / 0.5)
            idx = np.floor(u - 4) + np.arange(10)
            wts = 0.5 * ref_cubic(0.5 * (u - idx))
            mirror = np.concatenate([np.arange(n), np.arange(n)[::-1]])[np.mod(idx - 1, 2 * n).astype(int)]
            out[i - 1] = np.tensordot(wts / wts.sum(), x[mirror], axes=1)
        return out
    return one_axis(one_axis(img).T).T


def ref_niqe(img: np.ndarray, mu_p: np.ndarray, cov_p: np.ndarray) -> float:
    rows, cols = img.shape[0] // 96, img.shape[1] // 96
    im = img[: rows * 96, : cols * 96].astype(np.float64)
    feats = [[], []]
    for s in (1, 2):
        m, b = ref_mscn(im), 96 // s
        feats[s - 1] = [ref_features(m[i * b:(i + 1) * b, j * b:(j + 1) * b]) for j in range(cols) for i in range(rows)]
        im = ref_half(im)
    f = np.hstack([np.array(feats[0]), np.array(feats[1])])
    d = mu_p - np.nanmean(f, axis=0)
    cov = np.cov(f[~np.isnan(f).any(axis=1)], rowvar=False)
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov) / 2) @ d))


def ref_y(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)


@pytest.fixture(scope="module")
def model() -> tuple[np.ndarray, np.ndarray]:
    """A stand-in pristine model (the real one may not be installed): any mean and SPD covariance test the math."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(36, 36))
    return rng.normal(1.0, 0.5, 36), a @ a.T / 36 + 0.1 * np.eye(36)


# ----------------------------------------------------------------------------------------------------
# NIQE
# ----------------------------------------------------------------------------------------------------


def test_niqe_matches_matlab_reading_on_camera(model) -> None:
    img = skdata.camera()[:288, :384].astype(np.float64)  # 3x4 blocks
    img[150:200, 10:90] = 37.0  # a flat patch: exact zeros in MSCN at both scales
    assert (nr.mscn(img) == 0).sum() > 1000 and (ref_mscn(img) == 0).sum() > 1000
    np.testing.assert_allclose(nr.mscn(img), ref_mscn(img), atol=1e-9)
    assert nr.niqe(img, *model) == pytest.approx(ref_niqe(img, *model), rel=1e-9)


def test_calculate_niqe_y_crop_round(model) -> None:
    rgb = skdata.astronaut()[40:340, 60:460]
    expected = ref_niqe(ref_y(rgb)[4:-4, 4:-4], *model)  # 292x392 -> 3x4 blocks
    assert nr.calculate_niqe(rgb, crop_border=4, params=model) == pytest.approx(expected, rel=1e-9)
    assert nr.calculate_niqe(rgb, crop_border=0, params=model) != pytest.approx(expected, rel=1e-6)


def test_niqe_batch_scores_the_8bit_images(model) -> None:
    gen = torch.Generator().manual_seed(0)
    batch = (torch.from_numpy(skdata.astronaut()[:200, :200]).permute(2, 0, 1)[None] / 255.0).repeat(2, 1, 1, 1)
    batch[1] = (batch[1] + 0.05 * torch.randn(batch[1].shape, generator=gen)).clamp(0, 1)
    scores = nr.niqe_batch(batch, crop_border=2, params=model)
    assert scores.dtype == torch.float64 and scores.shape == (2,)
    for i in range(2):
        u8 = np.round(batch[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        assert scores[i].item() == pytest.approx(nr.calculate_niqe(u8, 2, model), rel=1e-12)


def test_niqe_batch_small_images_are_nan(model, monkeypatch, caplog) -> None:
    monkeypatch.setattr(nr, "_WARNED", set())
    caplog.set_level(logging.WARNING, logger="core.noreference")
    for _ in range(2):
        assert torch.isnan(nr.niqe_batch(torch.rand(2, 3, 100, 120), crop_border=3, params=model)).all()
    assert "smaller than 96x96 pixels after crop_border=3" in _one_line_warning(caplog, "core.noreference")


def test_niqe_edge_cases(model) -> None:
    with pytest.raises(ValueError, match="96x96"):
        nr.niqe(np.zeros((95, 300)), *model)
    assert math.isnan(nr.niqe(np.full((200, 200), 77.0), *model))  # no texture: every feature row has a NaN
    assert math.isnan(nr.niqe(skdata.camera()[:96, :150].astype(float), *model))  # one block: no covariance


def test_score_folder(model, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(nr, "load_niqe_params", lambda: model)
    caplog.set_level(logging.WARNING, logger="core.noreference")
    big, small = skdata.astronaut()[:200, :300], skdata.astronaut()[:90, :90]
    Image.fromarray(big).save(tmp_path / "img2.png")
    Image.fromarray(small).save(tmp_path / "img10.png")
    rows, summary = nr.score_folder(tmp_path, crop_border=2)
    expected = nr.calculate_niqe(big, 2, model)
    assert rows == [{"name": "img2", "niqe": pytest.approx(expected, rel=1e-12)}, {"name": "img10"}]
    assert summary == {"n_images": 2, "niqe": pytest.approx(expected, rel=1e-12)}
    assert "1 of 2 images smaller than 96x96" in _one_line_warning(caplog, "core.noreference")


def test_gaussian_window() -> None:
    np.testing.assert_allclose(nr.gaussian_window(), ref_window(), atol=1e-16)


# -- the real pristine model (installed with basicsr or mmagic) and the published MATLAB values -----------------

needs_params = pytest.mark.skipif(not nr.niqe_available(), reason=f"no {nr.NIQE_PARAMS_FILE}: {nr.NIQE_INSTALL_HINT}")


@needs_params
def test_installed_model_file() -> None:
    # BasicSR 1.4.2's basicsr/metrics/niqe_pris_params.npz; MMagic 1.2.0 ships the same bytes
    assert hashlib.sha256(nr.niqe_params_path().read_bytes()).hexdigest().startswith("2a7c182a68c9e7f1")
    with np.load(nr.niqe_params_path()) as f:
        np.testing.assert_allclose(f["gaussian_window"], ref_window(), atol=1e-15)  # the same window we compute
        assert f["mu_pris_param"][0, 0] == pytest.approx(2.6013137, abs=1e-6)  # BasicSR's / MATLAB's model
    mu, cov = nr.load_niqe_params()
    np.testing.assert_allclose(cov, cov.T)


# Published values: BasicSR's docstring (MATLAB R2021a on its test_scripts/data/baboon.png, Y channel) and the
# official MATLAB release on pyiqa's ResultsCalibra/dist_dir/I04.bmp (results_official.csv, rgb2gray input).
# Neither image ships in a package we depend on: put them in a folder and point NIQE_REFERENCE_IMAGES to it.
PUBLISHED = [("baboon.png", "y", 5.72957338, 1e-6), ("I04.bmp", "gray", 3.65492152353770, 1e-9)]


@needs_params
@pytest.mark.parametrize("name,convert,value,tol", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_matlab_value(name: str, convert: str, value: float, tol: float) -> None:
    path = Path(os.environ.get("NIQE_REFERENCE_IMAGES", "/nonexistent")) / name
    if not path.is_file():
        pytest.skip(f"{name} not found (set NIQE_REFERENCE_IMAGES=DIR to check the published value {value})")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    if convert == "y":
        score = nr.calculate_niqe(rgb, 0)
    else:  # MATLAB rgb2gray on uint8: rounded weighted sum
        score = nr.niqe(np.round(rgb @ np.array([0.298936021293776, 0.587043074451121, 0.114020904255103])),
                        *nr.load_niqe_params())
    assert score == pytest.approx(value, abs=tol)


# -- missing files: skipped with one line, nothing downloaded ----------------------------------------------------


@pytest.fixture
def offline(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path


def _one_line_warning(caplog, logger: str) -> str:
    records = [r for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]
    assert len(records) == 1 and "\n" not in records[0].getMessage()
    return records[0].getMessage()


def test_niqe_missing_model(offline, monkeypatch, caplog) -> None:
    monkeypatch.setattr(nr, "NIQE_PARAMS_SOURCES", (("no_such_package_xyz", "metrics"),))
    monkeypatch.setattr(nr, "_WARNED", set())
    caplog.set_level(logging.WARNING, logger="core.noreference")
    assert not nr.niqe_available()
    assert nr.load_niqe_params() is None and nr.niqe_batch(torch.rand(1, 3, 100, 100)) is None
    message = _one_line_warning(caplog, "core.noreference")
    assert "NIQE skipped" in message and nr.NIQE_PARAMS_FILE in message and "basicsr" in message
    with pytest.raises(FileNotFoundError):
        nr.calculate_niqe(np.zeros((100, 100, 3), np.uint8))


# ----------------------------------------------------------------------------------------------------
# DISTS
# ----------------------------------------------------------------------------------------------------


def _random_vgg16(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision-VGG16-shaped features state dict with He-scaled random weights, saved to ``path``."""
    import torchvision

    gen = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().features.state_dict().items()}
    state = {f"features.{k}": (torch.randn(s, generator=gen) * math.sqrt(2 / math.prod(s[1:])) if len(s) == 4
                               else 0.01 * torch.randn(s, generator=gen)) for k, s in shapes.items()}
    torch.save(state, path)
    return state


@pytest.fixture
def dists_files(tmp_path):
    vgg = tmp_path / "vgg16.pth"
    state = _random_vgg16(vgg)
    gen = torch.Generator().manual_seed(1)
    ab = {"alpha": 0.1 + 0.01 * torch.randn(1, 1475, 1, 1, generator=gen),
          "beta": 0.1 + 0.01 * torch.randn(1, 1475, 1, 1, generator=gen)}
    torch.save(ab, tmp_path / "weights.pt")
    return vgg, tmp_path / "weights.pt", state, ab


def test_dists_identity_and_symmetry(dists_files) -> None:
    net = dists_mod.DISTS(*dists_files[:2])
    x, y = torch.rand(2, 3, 48, 40), torch.rand(2, 3, 48, 40)
    torch.testing.assert_close(net(x, x), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(net(x, y), net(y, x), atol=1e-6, rtol=0)
    assert (net(x, y) > net(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1))).all()


def test_dists_matches_authors_code(dists_files, monkeypatch) -> None:
    dists_pt = pytest.importorskip("DISTS_pytorch.DISTS_pt", reason="pip install dists-pytorch")
    import torchvision

    vgg_path, ab_path, state, ab = dists_files
    reference_vgg = torchvision.models.vgg16()
    reference_vgg.features.load_state_dict({k[len("features."):]: v for k, v in state.items()})
    monkeypatch.setattr(dists_pt.models, "vgg16", lambda **kwargs: reference_vgg)  # never the ImageNet download
    reference = dists_pt.DISTS(load_weights=False)
    reference.alpha.data, reference.beta.data = ab["alpha"], ab["beta"]
    x, y = torch.rand(3, 3, 64, 56), torch.rand(3, 3, 64, 56)
    y[0] = x[0] * 0.9
    torch.testing.assert_close(dists_mod.DISTS(vgg_path, ab_path)(x, y), reference(x, y), atol=2e-6, rtol=0)


@pytest.mark.skipif(dists_mod.dists_weights_path() is None, reason="pip install dists-pytorch")
def test_dists_package_weights() -> None:
    # the authors' alpha / beta, byte for byte the copy in DiffIR-RealSR/Metric/DISTS/DISTS_pytorch/weights.pt
    path = dists_mod.dists_weights_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("f5e65c96230b7f6c")


def test_make_dists_missing_backbone(offline, monkeypatch, caplog) -> None:
    monkeypatch.setattr(dists_mod, "_WARNED", set())
    monkeypatch.setattr(dists_mod, "dists_weights_path", lambda: offline / "weights.pt")
    caplog.set_level(logging.WARNING, logger="core.dists")
    assert not dists_mod.dists_available()
    assert dists_mod.make_dists() is None and dists_mod.make_dists() is None
    message = _one_line_warning(caplog, "core.dists")
    assert "DISTS skipped" in message and str(offline / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
