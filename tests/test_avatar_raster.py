"""The pure-PyTorch Gaussian rasteriser against analytic images, gsplat's conventions and, on a GPU
with gsplat, gsplat itself; plus SSIM / PSNR."""

from __future__ import annotations

import math

import pytest
import torch

from backend.avatar.raster import (
    choose_backend,
    gsplat_module,
    rasterize,
    rasterize_2dgs,
)
from backend.avatar.raster_tiles import ALPHA_MIN, TileConfig
from backend.avatar.raster_torch import rasterization, rasterization_2dgs, sh_bases
from backend.avatar.ssim import psnr, ssim

SH_C0 = 0.28209479177387814


def camera(f: float, width: int, height: int, n: int = 1, dtype=torch.float32):
    """Identity world -> camera views [n, 4, 4] and pinhole intrinsics [n, 3, 3] (centre of the image)."""
    ks = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)
    return torch.eye(4, dtype=dtype).expand(n, 4, 4).clone(), ks.expand(n, 3, 3).clone()


def one_gaussian(x=0.0, y=0.0, z=2.0, scale=0.05, opacity=0.8, color=(1.0, 0.5, 0.25), dtype=torch.float32):
    return {"means": torch.tensor([[x, y, z]], dtype=dtype), "quats": torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
            "scales": torch.full((1, 3), scale, dtype=dtype), "opacities": torch.tensor([opacity], dtype=dtype),
            "colors": torch.tensor([color], dtype=dtype)}


def random_scene(n: int, seed: int, dtype=torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 1.6, 2.0 + torch.rand(n, 1, generator=g)], -1)
    return {"means": means.to(dtype), "quats": torch.randn(n, 4, generator=g).to(dtype),
            "scales": (0.02 + 0.08 * torch.rand(n, 3, generator=g)).to(dtype),
            "opacities": (0.3 + 0.7 * torch.rand(n, generator=g)).to(dtype),
            "colors": torch.rand(n, 3, generator=g).to(dtype)}


def analytic_alpha(width, height, cx, cy, cov, peak):
    """gsplat's alpha of a 2D Gaussian (covariance [2, 2]) at pixel centres (+0.5), skipped below 1/255."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    d = torch.stack([xs - cx, ys - cy], -1)
    maha = (d @ torch.linalg.inv(cov) * d).sum(-1)
    alpha = (peak * torch.exp(-0.5 * maha)).clamp(max=0.999)
    return torch.where(alpha >= ALPHA_MIN, alpha, 0.0)


@pytest.mark.parametrize("tile_size", [4, 16])
def test_single_gaussian_matches_analytic(tile_size):
    w, h, f, x, y, z, s, o = 64, 48, 80.0, 0.11, -0.04, 2.0, 0.05, 0.8
    view, ks = camera(f, w, h)
    g = one_gaussian(x=x, y=y, z=z, scale=s, opacity=o)
    img, alpha, meta = rasterization(**g, viewmats=view, Ks=ks, width=w, height=h, tile_size=tile_size)
    cx, cy = w / 2 + f * x / z, h / 2 + f * y / z
    # EWA: J (s^2 I) J^T = (f s / z)^2 (I + u u^T), u = (x, y) / z; then gsplat's 0.3 px^2 dilation
    u = torch.tensor([x / z, y / z])
    cov = (f * s / z) ** 2 * (torch.eye(2) + torch.outer(u, u)) + 0.3 * torch.eye(2)
    expect = analytic_alpha(w, h, cx, cy, cov, o)
    near_cut = (expect - ALPHA_MIN).abs() < 1e-4  # float ties at the 1/255 skip
    assert img.shape == (1, h, w, 3) and alpha.shape == (1, h, w, 1)
    assert torch.allclose(alpha[0, ..., 0][~near_cut], expect[~near_cut], atol=1e-5)
    assert torch.allclose(img[0][~near_cut], (expect[..., None] * g["colors"][0])[~near_cut], atol=1e-5)
    assert torch.allclose(meta["means2d"][0, 0], torch.tensor([cx, cy]), atol=1e-4)
    assert meta["radii"].shape == (1, 1, 2) and meta["depths"][0, 0] == z
    peak = alpha[0, ..., 0].flatten().argmax()
    assert (int(peak % w), int(peak // w)) == (int(cx), int(cy))  # pixel centre at +0.5


def test_antialiased_scales_opacity_by_compensation():
    w = h = 32
    view, ks = camera(40.0, w, h)
    g = one_gaussian(scale=0.02)
    _, classic, _ = rasterization(**g, viewmats=view, Ks=ks, width=w, height=h)
    _, anti, _ = rasterization(**g, viewmats=view, Ks=ks, width=w, height=h, rasterize_mode="antialiased")
    var = (40.0 * 0.02 / 2.0) ** 2  # on the optical axis the projection stays isotropic
    comp = var / (var + 0.3)  # sqrt(det / det_blur)
    assert float(anti.max()) == pytest.approx(float(classic.max()) * comp, rel=1e-4)


def test_nearer_gaussian_occludes_and_input_order_does_not_matter():
    w = h = 32
    view, ks = camera(60.0, w, h)
    near, far = one_gaussian(z=2.0, opacity=0.9, color=(1, 0, 0)), one_gaussian(z=3.0, opacity=0.9, color=(0, 1, 0))
    both = {k: torch.cat([far[k], near[k]]) for k in near}
    img, alpha, _ = rasterization(**both, viewmats=view, Ks=ks, width=w, height=h)
    centre = img[0, h // 2, w // 2]
    a_near = alpha_at_centre(near, view, ks, w, h)
    a_far = alpha_at_centre(far, view, ks, w, h)
    assert centre[0] == pytest.approx(a_near, abs=1e-5)  # red in front
    assert centre[1] == pytest.approx((1 - a_near) * a_far, abs=1e-5)  # green only through it
    assert alpha[0, h // 2, w // 2, 0] == pytest.approx(1 - (1 - a_near) * (1 - a_far), abs=1e-5)
    flipped = {k: v.flip(0) for k, v in both.items()}
    img2, _, _ = rasterization(**flipped, viewmats=view, Ks=ks, width=w, height=h)
    assert torch.allclose(img, img2, atol=1e-6)


def alpha_at_centre(g, view, ks, w, h):
    _, alpha, _ = rasterization(**g, viewmats=view, Ks=ks, width=w, height=h)
    return float(alpha[0, h // 2, w // 2, 0])


def test_background_and_depth_modes():
    w = h = 32
    view, ks = camera(60.0, w, h)
    g = one_gaussian(z=2.5)
    bg = torch.tensor([[0.1, 0.2, 0.3]])
    plain, alpha, _ = rasterization(**g, viewmats=view, Ks=ks, width=w, height=h)
    img, _, _ = rasterization(**g, viewmats=view, Ks=ks, width=w, height=h, backgrounds=bg)
    assert torch.allclose(img, plain + (1 - alpha) * bg, atol=1e-6)
    assert torch.allclose(img[0, 0, 0], bg[0])  # far from the Gaussian: the background
    rgbd, _, _ = rasterization(**g, viewmats=view, Ks=ks, width=w, height=h, backgrounds=bg, render_mode="RGB+D")
    assert rgbd.shape[-1] == 4 and torch.allclose(rgbd[..., :3], img)
    assert torch.allclose(rgbd[..., 3:], alpha * 2.5, atol=1e-5)  # no background on depth
    depth, _, _ = rasterization(**g, viewmats=view, Ks=ks, width=w, height=h, render_mode="ED")
    assert depth.shape[-1] == 1 and depth[0, h // 2, w // 2, 0] == pytest.approx(2.5, abs=1e-4)


def test_sh_degree_zero_equals_plain_colours():
    w = h = 32
    view, ks = camera(50.0, w, h)
    scene = random_scene(40, seed=1)
    sh = ((scene["colors"] - 0.5) / SH_C0)[:, None, :]  # gsplat adds 0.5 after the DC term
    plain, _, _ = rasterization(**scene, viewmats=view, Ks=ks, width=w, height=h)
    scene["colors"] = torch.cat([sh, torch.randn(40, 15, 3)], 1)  # higher bands unused at degree 0
    with_sh, _, _ = rasterization(**scene, viewmats=view, Ks=ks, width=w, height=h, sh_degree=0)
    assert torch.allclose(plain, with_sh, atol=1e-5)


def test_sh_bases_are_orthonormal():
    dirs = torch.nn.functional.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=-1)
    b = sh_bases(4, dirs)  # Monte Carlo: E[b b^T] = I / (4 pi)
    gram = b.T @ b / len(dirs) * 4 * math.pi
    assert torch.allclose(gram, torch.eye(25, dtype=torch.float64), atol=0.03)


def test_gradients_reach_every_parameter():
    w = h = 48
    view, ks = camera(60.0, w, h)
    scene = {k: v.requires_grad_() for k, v in random_scene(30, seed=2).items()}
    img, alpha, meta = rasterization(**scene, viewmats=view, Ks=ks, width=w, height=h)
    meta["means2d"].retain_grad()
    weights = torch.rand(img.shape, generator=torch.Generator().manual_seed(0))
    ((img * weights).sum() + alpha.sum()).backward()
    for name, p in scene.items():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert meta["means2d"].grad.abs().sum() > 0


@pytest.mark.parametrize("fn", [rasterization, rasterization_2dgs])
@pytest.mark.parametrize("remat", [False, True])
def test_gradients_match_finite_differences(fn, remat):
    w = h = 16
    view, ks = camera(20.0, w, h, dtype=torch.float64)
    scene = random_scene(6, seed=3, dtype=torch.float64)
    scene["means"] = scene["means"] * 0.3
    names = list(scene)
    cfg = TileConfig(depth_batch=2, checkpoint=remat)  # transmittance carried across batches

    def render(*params):
        img, alpha, _ = fn(**dict(zip(names, params)), viewmats=view, Ks=ks, width=w, height=h, config=cfg)
        return img, alpha

    inputs = tuple(v.requires_grad_() for v in scene.values())
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_fitting_fifty_gaussians_halves_the_l1_loss():
    w = h = 64
    view, ks = camera(64.0, w, h)
    target, _, _ = rasterization(**random_scene(50, seed=4), viewmats=view, Ks=ks, width=w, height=h)
    init = random_scene(50, seed=5)
    params = {"means": init["means"], "quats": init["quats"], "log_scales": init["scales"].log(),
              "logit_opacities": torch.logit(init["opacities"]), "logit_colors": torch.logit(init["colors"])}
    for p in params.values():
        p.requires_grad_()
    opt = torch.optim.Adam(params.values(), lr=0.02)
    losses = []
    for _ in range(100):
        img, _, _ = rasterization(params["means"], params["quats"], params["log_scales"].exp(),
                                  params["logit_opacities"].sigmoid(), params["logit_colors"].sigmoid(),
                                  view, ks, w, h)
        loss = (img - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_surfel_face_on_covers_its_ellipse_and_vanishes_edge_on():
    w = h = 64
    f, z, sx, sy = 80.0, 2.0, 0.1, 0.05
    view, ks = camera(f, w, h)
    g = one_gaussian(z=z, opacity=0.9)
    g["scales"] = torch.tensor([[sx, sy, 0.3]])  # the third scale is ignored by a surfel
    _, face, meta = rasterization_2dgs(**g, viewmats=view, Ks=ks, width=w, height=h)
    row, col = face[0, h // 2, :, 0], face[0, :, w // 2, 0]
    # half widths at half maximum: sigma * sqrt(2 ln 2), sigma = f * scale / z pixels
    for profile, scale in ((row, sx), (col, sy)):
        above = (profile > 0.45).nonzero()[:, 0]
        half_width = (above.max() - above.min() + 1) / 2
        assert half_width == pytest.approx(f * scale / z * math.sqrt(2 * math.log(2)), abs=1.0)
    normals = meta["render_normals"][0, h // 2, w // 2]
    assert torch.allclose(normals, torch.tensor([0.0, 0.0, -face[0, h // 2, w // 2, 0]]), atol=1e-5)
    edge = dict(g, quats=torch.tensor([[math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0]]))
    _, edge_on, _ = rasterization_2dgs(**edge, viewmats=view, Ks=ks, width=w, height=h)
    # only gsplat's 2D low-pass dot, exp(-|d|^2) around the centre, is left
    assert edge_on.sum() < 0.1 * face.sum()
    ys, xs = (edge_on[0, ..., 0] > 0).nonzero().T
    assert (xs - w // 2).abs().max() <= 3 and (ys - h // 2).abs().max() <= 3


def test_per_tile_cap_keeps_the_nearest():
    w = h = 16
    view, ks = camera(20.0, w, h)
    n = 300
    stack = {"means": torch.cat([torch.zeros(n, 2), torch.linspace(2, 4, n)[:, None]], -1),
             "quats": torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4), "scales": torch.full((n, 3), 0.2),
             "opacities": torch.full((n,), 0.02), "colors": torch.rand(n, 3)}
    # growing scale with depth keeps every projected footprint the same, so all share their tiles
    stack["scales"] = stack["scales"] * stack["means"][:, 2:] / 2
    cfg = TileConfig(max_per_tile=32, depth_batch=8)
    img, alpha, meta = rasterization(**stack, viewmats=view, Ks=ks, width=w, height=h, config=cfg)
    assert meta["n_dropped"] > 0 and torch.isfinite(img).all()
    nearest = {k: v[:32] for k, v in stack.items()}
    ref, ref_alpha, ref_meta = rasterization(**nearest, viewmats=view, Ks=ks, width=w, height=h)
    assert ref_meta["n_dropped"] == 0
    assert torch.allclose(img, ref, atol=1e-6) and torch.allclose(alpha, ref_alpha, atol=1e-6)


def test_cameras_batch_and_tile_size_change_nothing():
    w, h = 40, 24
    view, ks = camera(40.0, w, h, n=2)
    view[1, 0, 3] = 0.2  # second camera shifted sideways
    scene = random_scene(200, seed=6)
    both, both_alpha, _ = rasterization(**scene, viewmats=view, Ks=ks, width=w, height=h, tile_size=16)
    for c in range(2):
        one, one_alpha, _ = rasterization(**scene, viewmats=view[c:c + 1], Ks=ks[c:c + 1], width=w, height=h,
                                          config=TileConfig(pairs_per_step=4096, depth_batch=16))
        assert torch.allclose(both[c], one[0], atol=5e-5) and torch.allclose(both_alpha[c], one_alpha[0], atol=5e-5)


@pytest.mark.parametrize("fn", [rasterization, rasterization_2dgs])
def test_all_culled_renders_background_and_still_backpropagates(fn):
    view, ks = camera(20.0, 8, 8)
    g = {k: v.requires_grad_() for k, v in one_gaussian(z=0.0).items()}  # on the camera centre
    img, alpha, meta = fn(**g, viewmats=view, Ks=ks, width=8, height=8)
    assert (meta["radii"] == 0).all() and (img == 0).all() and (alpha == 0).all()
    (img.sum() + alpha.sum()).backward()
    assert all(torch.isfinite(v.grad).all() for v in g.values())


def test_unsupported_arguments_are_refused():
    view, ks = camera(20.0, 8, 8)
    g = one_gaussian()
    with pytest.raises(NotImplementedError, match="packed"):
        rasterization(**g, viewmats=view, Ks=ks, width=8, height=8, packed=True)
    with pytest.raises(NotImplementedError, match="camera_model"):
        rasterization(**g, viewmats=view, Ks=ks, width=8, height=8, camera_model="fisheye")
    with pytest.raises(TypeError):
        rasterization(**g, viewmats=view, Ks=ks, width=8, height=8, no_such_option=1)


def test_auto_backend_uses_torch_on_cpu():
    means = torch.zeros(1, 3)
    assert choose_backend("auto", means) == "torch"
    with pytest.raises(RuntimeError):
        choose_backend("gsplat", means)
    view, ks = camera(20.0, 8, 8)
    img, _, _ = rasterize(**one_gaussian(), viewmats=view, Ks=ks, width=8, height=8)
    img2, _, meta2 = rasterize_2dgs(**one_gaussian(), viewmats=view, Ks=ks, width=8, height=8)
    assert img.shape == img2.shape == (1, 8, 8, 3) and "render_normals" in meta2


def test_ssim_and_psnr():
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    assert float(ssim(img, img)) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(img[0].permute(1, 2, 0), img[0].permute(1, 2, 0))) == pytest.approx(1.0, abs=1e-6)
    noisy = (img + 0.2 * torch.randn_like(img)).clamp(0, 1).requires_grad_()
    value = ssim(noisy, img)
    value.backward()
    assert 0 < value.item() < 0.9 and torch.isfinite(noisy.grad).all()
    assert value.item() == pytest.approx(ssim(img, noisy).item(), abs=1e-6)
    assert float(psnr(torch.zeros(4, 4, 3), torch.full((4, 4, 3), 0.1))) == pytest.approx(20.0, abs=1e-4)
    assert float(psnr(torch.zeros(8), torch.full((8,), 25.5), max_val=255.0)) == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(float(psnr(img, img)))
    # masked: only the covered half counts (its error 0.1 -> 20 dB), the other half's large error not
    target = torch.zeros(4, 4, 3)
    guess = torch.cat([torch.full((4, 2, 3), 0.1), torch.full((4, 2, 3), 0.9)], 1)
    mask = torch.cat([torch.ones(4, 2, 1), torch.zeros(4, 2, 1)], 1)
    assert float(psnr(guess, target, mask)) == pytest.approx(20.0, abs=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("surfels", [False, True])
def test_torch_matches_gsplat_on_cuda(surfels):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if gsplat_module() is None:
        pytest.skip("needs gsplat (pip install gsplat)")
    w = h = 128
    scene = {k: v.cuda() for k, v in random_scene(2000, seed=8).items()}
    view, ks = (t.cuda() for t in camera(120.0, w, h))
    fn = rasterize_2dgs if surfels else rasterize
    ref, ref_alpha, _ = fn(**scene, viewmats=view, Ks=ks, width=w, height=h, backend="gsplat")
    img, alpha, meta = fn(**scene, viewmats=view, Ks=ks, width=w, height=h, backend="torch")
    assert meta["n_dropped"] == 0
    assert (img - ref).abs().mean() < 1e-2
    assert (alpha - ref_alpha).abs().mean() < 1e-2
