"""The Gaussian PLY: standard 3DGS layout (what splat viewers read) plus HeadRig's triangle binding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from backend.avatar.binding import GaussianBinding
from backend.avatar.ply import PlyFormatError, read_gaussians_ply, write_gaussians_ply
from shared.splat_axes import AXES_COMMENT


def cloud(n: int = 50, degree: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    return {
        "means": rng.normal(0, 0.1, (n, 3)).astype(np.float32),
        "quats": rng.normal(size=(n, 4)).astype(np.float32),
        "scales": rng.uniform(1e-4, 1e-2, (n, 3)).astype(np.float32),
        "opacities": rng.uniform(0.01, 0.99, n).astype(np.float32),
        "sh": rng.normal(0, 0.5, (n, k, 3)).astype(np.float32),
    }


def binding_for(c: dict, n_tris: int = 1000, seed: int = 1) -> GaussianBinding:
    g = torch.Generator().manual_seed(seed)
    n = len(c["means"])
    bary = torch.rand(n, 3, generator=g)
    return GaussianBinding(
        tri=torch.randint(0, n_tris, (n,), generator=g), bary=bary / bary.sum(1, keepdim=True),
        offset=torch.randn(n, 3, generator=g) * 0.1, rot_local=torch.randn(n, 4, generator=g),
        log_scale=torch.randn(n, 3, generator=g) - 2, opacity_logit=torch.logit(torch.from_numpy(c["opacities"])),
        sh=torch.from_numpy(c["sh"]))


def standard_names(degree: int) -> list[str]:
    """Written out independently of the module: the INRIA 3DGS order."""
    rest = 3 * ((degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


BINDING_NAMES = ["tri", "bary_0", "bary_1", "bary_2", "offset_0", "offset_1", "offset_2",
                 "lrot_0", "lrot_1", "lrot_2", "lrot_3", "lscale_0", "lscale_1", "lscale_2"]


def test_round_trip_with_binding(tmp_path):
    c = cloud()
    b = binding_for(c)
    path = write_gaussians_ply(tmp_path / "g.ply", binding=b, **c)
    got = read_gaussians_ply(path)
    assert got.n == 50 and got.sh_degree == 3
    for key in ("means", "quats", "sh"):
        assert getattr(got, key).dtype == np.float32
        np.testing.assert_array_equal(getattr(got, key), c[key])
    np.testing.assert_allclose(got.opacities, c["opacities"], rtol=1e-6)
    np.testing.assert_allclose(got.scales, c["scales"], rtol=1e-6)
    for field in ("tri", "bary", "offset", "rot_local", "log_scale", "opacity_logit", "sh"):
        assert torch.equal(getattr(got.binding, field), getattr(b, field)), field
    assert got.binding.tri.dtype == torch.int64
    # Writing what was read gives the same file (the binding's logits are what is stored).
    again = write_gaussians_ply(tmp_path / "again.ply", got.means, got.quats, got.scales, got.opacities, got.sh,
                                got.binding)
    assert again.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.ply", "g.ply"]  # no temporaries left


def test_header_names_order_and_types(tmp_path):
    c = cloud(degree=2)
    path = write_gaussians_ply(tmp_path / "g.ply", binding=binding_for(c), **c)
    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["vertex"]
    props = ply["vertex"].properties
    assert [p.name for p in props] == standard_names(2) + BINDING_NAMES
    assert {p.val_dtype for p in props if p.name != "tri"} == {"f4"} and props[-14].val_dtype == "i4"
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\n")
    for comment in ("comment headrig binding v1", "comment sh_degree 2", "comment " + AXES_COMMENT):
        assert comment in header
    plain = write_gaussians_ply(tmp_path / "plain.ply", **c)
    assert [p.name for p in PlyData.read(str(plain))["vertex"].properties] == standard_names(2)
    assert b"headrig binding" not in plain.read_bytes()[:4096]


def test_stored_encodings(tmp_path):
    c = cloud(n=20, degree=1)
    rows = PlyData.read(str(write_gaussians_ply(tmp_path / "g.ply", **c)))["vertex"].data
    p = c["opacities"].astype(np.float64)
    np.testing.assert_allclose(rows["opacity"], np.log(p / (1 - p)), rtol=1e-5)  # logit, not the opacity
    np.testing.assert_allclose(rows["scale_1"], np.log(c["scales"][:, 1]), rtol=1e-6)  # log scale
    # OpenCV axes: glTF turned 180 degrees about x, so y and z change sign ...
    for axis, sign in zip("xyz", (1, -1, -1)):
        np.testing.assert_array_equal(rows[axis], sign * c["means"][:, "xyz".index(axis)])
    # ... and the rotation is that turn after q: (0, 1, 0, 0) * (w, x, y, z) = (-x, w, -z, y), w first.
    w, x, y, z = c["quats"].T
    np.testing.assert_array_equal(np.stack([rows[f"rot_{i}"] for i in range(4)], 1), np.stack([-x, w, -z, y], 1))
    for i in range(3):
        assert (rows[f"n{'xyz'[i]}"] == 0).all()
        np.testing.assert_array_equal(rows[f"f_dc_{i}"], c["sh"][:, 0, i])
    # Channel-major rest: f_rest_0..2 are red's three degree-1 coefficients, then green's, then blue's;
    # the degree-1 bases are -y, z, -x (times a constant), so the turn flips the first two.
    for channel in range(3):
        for coeff, sign in zip(range(1, 4), (-1, -1, 1)):
            np.testing.assert_array_equal(rows[f"f_rest_{channel * 3 + coeff - 1}"], sign * c["sh"][:, coeff, channel])


def test_extreme_opacities_stay_finite(tmp_path):
    c = cloud(n=4, degree=0)
    c["opacities"] = np.array([0.0, 1.0, 0.5, 1.0 - 1e-9], np.float32)
    got = read_gaussians_ply(write_gaussians_ply(tmp_path / "g.ply", **c))
    assert np.isfinite(PlyData.read(str(tmp_path / "g.ply"))["vertex"].data["opacity"]).all()
    np.testing.assert_allclose(got.opacities, [0, 1, 0.5, 1], atol=1e-6)


def write_standard_ply(path, c: dict, normals: bool = True) -> None:
    """A minimal independent writer (the INRIA layout; gsplat's exporter omits the normals)."""
    n, k = c["sh"].shape[:2]
    names = [name for name in standard_names(math.isqrt(k) - 1) if normals or name not in ("nx", "ny", "nz")]
    rows = np.zeros(n, [(name, "f4") for name in names])
    for i, axis in enumerate("xyz"):
        rows[axis] = c["means"][:, i]
        rows[f"f_dc_{i}"] = c["sh"][:, 0, i]
        rows[f"scale_{i}"] = np.log(c["scales"][:, i])
    rest = c["sh"][:, 1:].transpose(0, 2, 1).reshape(n, -1)
    for i in range(rest.shape[1]):
        rows[f"f_rest_{i}"] = rest[:, i]
    rows["opacity"] = np.log(c["opacities"] / (1 - c["opacities"]))
    for i in range(4):
        rows[f"rot_{i}"] = c["quats"][:, i]
    PlyData([PlyElement.describe(rows, "vertex")], text=False, byte_order="<").write(str(path))


@pytest.mark.parametrize("degree, normals", [(1, True), (0, False), (3, False)])
def test_reads_standard_files(tmp_path, degree, normals):
    c = cloud(n=30, degree=degree)
    write_standard_ply(tmp_path / "std.ply", c, normals)
    got = read_gaussians_ply(tmp_path / "std.ply")
    assert got.binding is None and got.sh_degree == degree
    np.testing.assert_array_equal(got.sh, c["sh"])
    np.testing.assert_array_equal(got.means, c["means"])
    np.testing.assert_allclose(got.opacities, c["opacities"], rtol=1e-5)
    np.testing.assert_allclose(got.scales, c["scales"], rtol=1e-5)


def test_bad_files_name_the_problem(tmp_path):
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"\x89PNG\r\n\x1a\nnot a ply at all")
    with pytest.raises(PlyFormatError, match="junk.ply"):
        read_gaussians_ply(junk)

    c = cloud(n=10, degree=1)
    good = write_gaussians_ply(tmp_path / "good.ply", binding=binding_for(c), **c)
    data = good.read_bytes()
    (tmp_path / "short.ply").write_bytes(data[:-100])
    with pytest.raises(PlyFormatError, match="short.ply"):
        read_gaussians_ply(tmp_path / "short.ply")

    rows = PlyData.read(str(good))["vertex"].data

    def variant(name: str, drop: tuple = (), change=None, comments=()) -> str:
        keep = [f for f in rows.dtype.names if f not in drop]
        out = np.zeros(len(rows), [(f, rows.dtype[f]) for f in keep])
        for f in keep:
            out[f] = rows[f]
        if change:
            change(out)
        path = str(tmp_path / name)
        PlyData([PlyElement.describe(out, "vertex")], byte_order="<", comments=list(comments)).write(path)
        return path

    with pytest.raises(PlyFormatError, match="missing property 'opacity'"):
        read_gaussians_ply(variant("no_opacity.ply", drop=("opacity",)))
    with pytest.raises(PlyFormatError, match="f_rest"):
        read_gaussians_ply(variant("odd_rest.ply", drop=("f_rest_8", "f_rest_7", "f_rest_6")))
    with pytest.raises(PlyFormatError, match=r"binding properties incomplete.*lscale_2"):
        read_gaussians_ply(variant("half_binding.ply", drop=("lscale_2",)))
    with pytest.raises(PlyFormatError, match="'scale_1' has non-finite"):
        read_gaussians_ply(variant("nan.ply", change=lambda out: out["scale_1"].__setitem__(3, np.nan)))
    with pytest.raises(PlyFormatError, match="'tri' has negative"):
        read_gaussians_ply(variant("neg_tri.ply", change=lambda out: out["tri"].__setitem__(0, -1)))
    with pytest.raises(PlyFormatError, match="sh_degree 3"):
        read_gaussians_ply(variant("degree.ply", comments=("sh_degree 3",)))
    with pytest.raises(PlyFormatError, match="no 'vertex' element"):
        PlyData([PlyElement.describe(rows, "splat")], byte_order="<").write(str(tmp_path / "named.ply"))
        read_gaussians_ply(tmp_path / "named.ply")


def test_writer_rejects_bad_input(tmp_path):
    c = cloud(n=5, degree=1)
    for key, value, message in (("scales", -c["scales"], "scales must be > 0"),
                                ("opacities", c["opacities"] + 1, r"opacities must lie in \[0, 1\]"),
                                ("sh", c["sh"][:, :3], "sh must be"),
                                ("quats", c["quats"][:4], r"quats must be \[5, 4\]")):
        with pytest.raises(ValueError, match=message):
            write_gaussians_ply(tmp_path / "bad.ply", **{**c, key: value})
    b = binding_for(c)
    b.sh = b.sh + 1
    with pytest.raises(ValueError, match="binding.sh"):
        write_gaussians_ply(tmp_path / "bad.ply", binding=b, **c)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_stored_sh_is_the_same_light_field_in_opencv_axes(degree):
    """Turning the frame must not change any colour: the file's SH evaluated towards the turned
    direction R d equals the glTF SH towards d (the renderer's own basis, degrees up to 4)."""
    from backend.avatar.ply import opencv_from_gltf
    from backend.avatar.raster_torch import sh_bases

    c = cloud(n=8, degree=degree, seed=degree)
    _, _, stored = opencv_from_gltf(c["means"], c["quats"], c["sh"])
    dirs = np.random.default_rng(0).normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    turned = dirs * np.array([1, -1, -1])

    def colour(sh, d):  # [N, D, 3]
        basis = sh_bases(degree, torch.tensor(d, dtype=torch.float64)).numpy()  # [D, K]
        return np.einsum("dk,nkc->ndc", basis, sh.astype(np.float64))

    np.testing.assert_allclose(colour(stored, turned), colour(c["sh"], dirs), atol=1e-5)
    assert not np.allclose(colour(c["sh"], turned), colour(c["sh"], dirs), atol=1e-3)  # the turn matters


def test_stored_rotation_is_the_turn_after_q():
    """The stored quaternion's matrix is diag(1, -1, -1) times the glTF one."""
    from backend.avatar.binding import quaternion_to_matrix
    from backend.avatar.ply import opencv_from_gltf

    c = cloud(n=20)
    q = c["quats"] / np.linalg.norm(c["quats"], axis=1, keepdims=True)
    _, stored, _ = opencv_from_gltf(c["means"], q, c["sh"])
    turn = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(quaternion_to_matrix(torch.tensor(stored)).numpy(),
                               turn @ quaternion_to_matrix(torch.tensor(q)).numpy(), atol=1e-6)


def test_older_gltf_axis_files_read_as_stored(tmp_path):
    """Files from before the OpenCV convention (header: glTF axes) keep their values."""
    c = cloud(n=10, degree=1)
    rows = PlyData.read(str(write_gaussians_ply(tmp_path / "new.ply", **c)))["vertex"].data.copy()
    for name in ("x", "y", "z"):
        rows[name] = c["means"][:, "xyz".index(name)]
    PlyData([PlyElement.describe(rows, "vertex")], byte_order="<",
            comments=["sh_degree 1", "units metres, Y up (glTF axes)"]).write(str(tmp_path / "old.ply"))
    np.testing.assert_array_equal(read_gaussians_ply(tmp_path / "old.ply").means, c["means"])


def test_axes_are_named_in_the_header(tmp_path):
    """shared.splat_axes (also read by the Blender add-on) recognises the writer's comment."""
    from shared.splat_axes import GLTF, GLTF_FROM_PLY, OPENCV, gltf_from_ply, ply_axes

    comments = PlyData.read(str(write_gaussians_ply(tmp_path / "g.ply", **cloud(n=3, degree=0)))).comments
    assert ply_axes(comments) == OPENCV and gltf_from_ply(comments) == GLTF_FROM_PLY[OPENCV]
    assert ply_axes(["sh_degree 0", "units metres, Y up (glTF axes)"]) == ply_axes([]) == GLTF
    m = np.array(GLTF_FROM_PLY[OPENCV])
    np.testing.assert_array_equal(m @ m, np.eye(3))
    assert np.linalg.det(m) == 1.0  # a turn, not a mirror
