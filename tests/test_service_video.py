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
