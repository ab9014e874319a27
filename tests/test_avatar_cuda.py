"""On a GPU machine: gsplat's CUDA kernels against the project's torch rasteriser (forward and
gradients), and the device switch putting the avatar path on CUDA. Skipped cleanly without CUDA
(CPU parity against gsplat's torch reference: test_avatar_gsplat_ref.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.avatar.binding import GaussianBinding, deform
from backend.avatar.raster import choose_backend, gsplat_module, rasterize, rasterize_2dgs
from tests.test_avatar_raster import camera, random_scene

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module", autouse=True)
def gsplat_on_cuda():
    if gsplat_module() is None:
        pytest.fail("gsplat is a declared dependency but does not import")


@pytest.mark.parametrize("surfels", [False, True])
def test_gsplat_gradients_match_torch(surfels):
    w = h = 64
    scene = {k: v.cuda().requires_grad_() for k, v in random_scene(300, seed=11).items()}
    view, ks = (t.cuda() for t in camera(70.0, w, h))
    fn = rasterize_2dgs if surfels else rasterize
    weights = torch.rand(1, h, w, 4, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    grads = {}
    for backend in ("gsplat", "torch"):
        img, alpha, _ = fn(**scene, viewmats=view, Ks=ks, width=w, height=h, backend=backend)
        loss = (torch.cat([img, alpha], -1) * weights).sum()
        grads[backend] = torch.autograd.grad(loss, list(scene.values()))
    for name, a, b in zip(scene, grads["gsplat"], grads["torch"]):
        if surfels and name == "scales":
            a, b = a[:, :2], b[:, :2]
        scale = b.abs().max().clamp_min(1e-8)
        # float32 kernels sum in another order: compare relative to the largest gradient
        assert ((a - b).abs().max() / scale) < 2e-2, (name, float((a - b).abs().max()), float(scale))


def test_auto_picks_gsplat_for_cuda_tensors_and_matches_cpu():
    scene = random_scene(500, seed=12)
    view, ks = camera(100.0, 96, 96)
    assert choose_backend("auto", scene["means"].cuda()) == "gsplat"
    cpu, cpu_alpha, _ = rasterize_2dgs(**scene, viewmats=view, Ks=ks, width=96, height=96)
    gpu, gpu_alpha, _ = rasterize_2dgs(**{k: v.cuda() for k, v in scene.items()}, viewmats=view.cuda(), Ks=ks.cuda(),
                                       width=96, height=96)
    assert (gpu.cpu() - cpu).abs().mean() < 1e-3 and (gpu_alpha.cpu() - cpu_alpha).abs().mean() < 1e-3


def test_binding_deforms_on_cuda_like_cpu():
    g = torch.Generator().manual_seed(13)
    verts = torch.randn(30, 3, generator=g)
    triangles = torch.randint(0, 30, (40, 3), generator=g)
    triangles = triangles[(triangles[:, 0] != triangles[:, 1]) & (triangles[:, 1] != triangles[:, 2])
                          & (triangles[:, 0] != triangles[:, 2])]
    n = 100
    b = GaussianBinding(torch.randint(0, len(triangles), (n,), generator=g),
                        torch.as_tensor(np.random.default_rng(0).dirichlet(np.ones(3), n), dtype=torch.float32),
                        0.1 * torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g),
                        torch.randn(n, 3, generator=g) * 0.2, torch.zeros(n), torch.zeros(n, 1, 3))
    on_gpu = GaussianBinding(*(t.cuda() for t in (b.tri, b.bary, b.offset, b.rot_local, b.log_scale, b.opacity_logit, b.sh)))
    for a, c in zip(deform(b, verts, triangles), deform(on_gpu, verts.cuda(), triangles.cuda())):
        assert c.is_cuda and torch.allclose(a, c.cpu(), atol=1e-4)
