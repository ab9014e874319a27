"""Video jobs over the real service (loopback ZeroMQ, spawned worker): reconstruct from a clip, retarget."""

from __future__ import annotations

import signal

import pytest

from bench.serverproc import ServerProcess
from shared.animation import read_animation
from shared.bundle import read_bundle
from shared.client import HeadRigClient
from tests.conftest import MEDIA, require_shared

VIDEO = MEDIA / "video"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_shared()
    srv = ServerProcess(tmp_path_factory.mktemp("serve-video") / "data").start()
    yield srv
    srv.kill(signal.SIGTERM)


def _run(client, kind, params, files) -> tuple[str, object]:
    """(job id, terminal event)."""
    job = client.submit(kind, params, files)
    return job, client.wait(job, timeout_s=600)


def _failed(client, kind, params, files):
    job, event = _run(client, kind, params, files)
    assert event.type == "failed", event
    return event


def test_server_advertises_video_kinds(server):
    with HeadRigClient(server.address, client_name="test") as client:
        assert {"reconstruct", "retarget"} <= set(client.hello()["kinds"])


def test_reconstruct_from_video_over_the_service(server, tmp_path):
    with HeadRigClient(server.address, client_name="test", timeout_s=30) as client:
        job, event = _run(client, "reconstruct", {}, [VIDEO / "d0.mp4"])
        assert event.type == "done", event
        bundle = client.fetch(job, tmp_path / "head")
    manifest = read_bundle(bundle)
    assert manifest.inputs[0].file == "d0.mp4" and manifest.job_id
    clip = read_animation(bundle)
    assert clip.frame_count == 78 and clip.missing == []


def test_retarget_over_the_service_with_params(server, tmp_path, capsys):
    from backend.cli import main

    out = tmp_path / "anim"
    code = main(["client", "retarget", str(VIDEO / "d0.mp4"), "-o", str(out), "--server", server.address, "-q",
                 "--min-cutoff", "0.5", "--no-head-rotation"])
    assert code == 0, capsys.readouterr().err
    clip = read_animation(out)
    assert clip.frame_count == 78
    assert clip.calibration["config"]["one_euro"]["min_cutoff"] == 0.5
    assert all(q == [1.0, 0.0, 0.0, 0.0] for q in clip.head_rotation)
    assert (out / "livelink.csv").is_file()


def test_bad_retarget_params_and_inputs_fail_cleanly(server):
    with HeadRigClient(server.address, client_name="test", timeout_s=30) as client:
        event = _failed(client, "retarget", {"gain": {"jawOpn": 2.0}}, [VIDEO / "d0.mp4"])
        assert event.code == "bad_params" and "jawOpn" in event.message
        assert _failed(client, "retarget", {}, [MEDIA / "images" / "d8.jpg"]).code == "bad_inputs"
        assert _failed(client, "reconstruct", {}, [VIDEO / "d0.mp4", MEDIA / "images" / "d8.jpg"]).code == "mixed_inputs"


def test_turntable_job_over_the_service(server, bundle_dir, asset, tmp_path):
    """head.json + a gaussians.ply bound to the head -> turntable.mp4 rendered by the worker."""
    import av
    import numpy as np
    import torch

    from backend.avatar.binding import GaussianBinding, deform
    from backend.avatar.ply import write_gaussians_ply
    from shared.bundle import read_bundle

    identity = np.asarray(read_bundle(bundle_dir).identity)
    verts = torch.tensor(asset.vertices(identity) / 100.0, dtype=torch.float32)
    rng = np.random.default_rng(3)
    n = 500
    face = np.nonzero(asset.triangle_material() == asset.material_names.index("M_Face"))[0]
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    binding = GaussianBinding(torch.tensor(rng.choice(face, n)), f32(rng.dirichlet([2, 2, 2], n)), torch.zeros(n, 3),
                              f32(np.tile([1.0, 0, 0, 0], (n, 1))), torch.zeros(n, 3), torch.full((n,), 3.0),
                              f32(rng.normal(0, 1, (n, 1, 3))))
    means, quats, scales = deform(binding, verts, torch.tensor(asset.triangles, dtype=torch.long))
    ply = write_gaussians_ply(tmp_path / "gaussians.ply", means, quats, scales, torch.sigmoid(binding.opacity_logit),
                              binding.sh, binding=binding)
    with HeadRigClient(server.address, client_name="test", timeout_s=30) as client:
        job, event = _run(client, "turntable", {"frames": 4, "size": 64}, [bundle_dir / "head.json", ply])
        assert event.type == "done", event
        out = client.fetch(job, tmp_path / "tt")
        assert _failed(client, "turntable", {"frames": 4, "size": 5}, [bundle_dir / "head.json", ply]).code == "bad_params"
        assert _failed(client, "turntable", {}, [bundle_dir / "head.json"]).code == "bad_inputs"
    with av.open(str(out / "turntable.mp4")) as clip:
        frames = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    assert frames[0].std() > 1  # the head is there, not a flat background
