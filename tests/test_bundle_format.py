"""The head-bundle format (shared/bundle.py): manifest round trip, validation, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from shared import bundle
from shared.bundle import (
    FORMAT_VERSION, BundleError, CameraIntrinsics, HeadManifest, InputFit, InputRecord, bundle_summary, read_bundle,
    write_bundle,
)

NAMES = ["jawOpen", "eyeBlink_L", "eyeBlink_R"]


def make_manifest(**changes) -> HeadManifest:
    camera = CameraIntrinsics(width=720, height=720, fx=800.0, fy=800.0, cx=360.0, cy=360.0)
    fit = InputFit(input_index=0, rotation=[0.01, -0.2, 0.0], translation=[0.5, -1.0, 60.0],
                   expression={n: 0.1 * i for i, n in enumerate(NAMES)}, landmark_rmse_px=1.8,
                   landmark_rmse_iod=0.021, camera=camera)
    fields = dict(
        head_model="ict-facekit", vertex_count=26719, face_count=26384, shape_keys=list(NAMES),
        identity=[0.5, -1.25, 0.0], inputs=[InputRecord(file="d8.jpg", sha256="a" * 64, width=720, height=720)],
        fits=[fit], quality={"landmark_rmse_px": 1.8, "landmark_rmse_iod": 0.021, "identity_prior": 0.4,
                             "accepted": True},
        notes=["single photo: the back of the head is the model's average"], job_id="job-1",
    )
    fields.update(changes)
    return HeadManifest(**fields)


def files() -> dict:
    return {"head.glb": b"glTF" + bytes(100), "texture.png": b"\x89PNG" + bytes(50)}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_manifest_round_trip_through_json():
    manifest = make_manifest()
    data = json.loads(json.dumps(manifest.to_dict()))
    assert list(data)[:2] == ["format", "version"]
    assert HeadManifest.from_dict(data) == manifest


def test_numpy_values_become_plain_json():
    manifest = make_manifest(identity=np.array([0.5, -1.0], np.float32), vertex_count=np.int64(26719),
                             quality={"landmark_rmse_px": np.float32(1.5), "accepted": True})
    clean = manifest.validate()
    json.dumps(clean.to_dict(), allow_nan=False)  # no numpy types left
    assert clean.identity == [0.5, -1.0] and clean.vertex_count == 26719


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("identity"), "identity"),
    (lambda d: d["fits"][0]["camera"].pop("fx"), "fits[0].camera.fx"),
    (lambda d: d.__setitem__("vertex_count", "many"), "vertex_count"),
    (lambda d: d["fits"][0]["camera"].__setitem__("fx", "800"), "fits[0].camera.fx"),
    (lambda d: d["fits"][0].__setitem__("rotation", [0.0, 1.0]), "fits[0].rotation"),
    (lambda d: d["inputs"][0].__setitem__("file", "../etc/passwd"), "inputs[0].file"),
    (lambda d: d["inputs"][0].__setitem__("sha256", "xyz"), "inputs[0].sha256"),
    (lambda d: d["fits"][0].__setitem__("input_index", 3), "fits[0].input_index"),
    (lambda d: d["fits"][0]["expression"].pop("jawOpen"), "fits[0].expression"),
    (lambda d: d.__setitem__("units", "m"), "units"),
    (lambda d: d.__setitem__("created", "yesterday"), "created"),
    (lambda d: d.__setitem__("surprise", 1), "surprise"),
    (lambda d: d.__setitem__("format", "something.else"), "format"),
    (lambda d: d["quality"].__setitem__("landmark_rmse_px", [1]), "quality.landmark_rmse_px"),
    (lambda d: d["identity"].__setitem__(1, True), "identity[1]"),
])
def test_validation_names_the_field(mutate, field):
    data = make_manifest().to_dict()
    mutate(data)
    with pytest.raises(BundleError) as info:
        HeadManifest.from_dict(data)
    assert info.value.field == field
    assert field in str(info.value)


def test_newer_version_asks_to_update(tmp_path):
    write_bundle(tmp_path / "head", make_manifest(), files())
    path = tmp_path / "head" / "head.json"
    data = json.loads(path.read_text())
    data["version"] = FORMAT_VERSION + 1
    data["some_new_field"] = {}  # a newer writer's fields must not mask the version message
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="update HeadRig") as info:
        read_bundle(tmp_path / "head")
    assert info.value.path == str(path) and info.value.field == "version"


def test_read_error_names_file_and_field(tmp_path):
    write_bundle(tmp_path / "head", make_manifest(), files())
    path = tmp_path / "head" / "head.json"
    data = json.loads(path.read_text())
    del data["fits"][0]["camera"]["cy"]
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError) as info:
        read_bundle(tmp_path / "head")
    assert str(path) in str(info.value) and "fits[0].camera.cy" in str(info.value)
    path.write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(tmp_path / "head")


def test_write_then_read(tmp_path):
    manifest = make_manifest(files={"head.glb": {"role": "head mesh"}})
    written = write_bundle(tmp_path / "out" / "head", manifest, files())
    assert manifest.files == written.files  # filled in, as callers expect
    assert written.files["head.glb"]["role"] == "head mesh"
    assert written.files["texture.png"] == {
        "sha256": bundle.sha256_file(tmp_path / "out" / "head" / "texture.png"), "bytes": 54, "role": "texture"}
    assert read_bundle(tmp_path / "out" / "head") == written
    assert read_bundle(tmp_path / "out" / "head" / "head.json") == written
    assert sorted(p.name for p in (tmp_path / "out" / "head").iterdir()) == ["head.glb", "head.json", "texture.png"]
    assert leftovers(tmp_path / "out") == []


def test_copies_path_sources(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 << 20))
    written = write_bundle(tmp_path / "head", make_manifest(), {"head.glb": source})
    assert (tmp_path / "head" / "head.glb").read_bytes() == source.read_bytes()
    assert written.files["head.glb"]["bytes"] == 3 << 20


def test_failure_mid_write_leaves_nothing(tmp_path):
    sources = {"head.glb": b"glTF" + bytes(100), "texture.png": tmp_path / "does-not-exist.png"}
    manifest = make_manifest()
    with pytest.raises(BundleError, match="does-not-exist.png"):
        write_bundle(tmp_path / "head", manifest, sources)
    assert not (tmp_path / "head").exists()
    assert leftovers(tmp_path) == []
    assert manifest.files == {}


def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_fsync(fd):  # the disk fails on the second file
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(bundle.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_bundle(tmp_path / "head", make_manifest(), files())
    assert not (tmp_path / "head").exists() and leftovers(tmp_path) == []


def test_existing_folder_needs_force(tmp_path):
    out = tmp_path / "head"
    write_bundle(out, make_manifest(), files())
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(out, make_manifest(job_id="job-2"), files())
    assert read_bundle(out).job_id == "job-1"
    write_bundle(out, make_manifest(job_id="job-2"), {"head.glb": b"glTF2"}, force=True)
    assert read_bundle(out).job_id == "job-2"
    assert sorted(p.name for p in out.iterdir()) == ["head.glb", "head.json"]  # nothing of the old one left
    assert leftovers(tmp_path) == []


def test_failed_forced_write_keeps_the_old_bundle(tmp_path, monkeypatch):
    out = tmp_path / "head"
    write_bundle(out, make_manifest(), files())
    with pytest.raises(BundleError):
        write_bundle(out, make_manifest(job_id="job-2"), {"head.glb": tmp_path / "missing.glb"}, force=True)
    assert read_bundle(out).job_id == "job-1" and leftovers(tmp_path) == []
    # Interrupted between moving the old bundle aside and renaming the new one in: the old returns.
    real_rename = os.rename

    def interrupted_rename(src, dst):
        if ".tmp-" in str(src):
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(bundle.os, "rename", interrupted_rename)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(out, make_manifest(job_id="job-3"), files(), force=True)
    monkeypatch.undo()
    assert read_bundle(out).job_id == "job-1" and leftovers(tmp_path) == []


def test_force_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(BundleError, match="not a HeadRig bundle"):
        write_bundle(precious, make_manifest(), files(), force=True)
    assert (precious / "thesis.tex").exists()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(BundleError, match="not a HeadRig bundle"):
        write_bundle(a_file, make_manifest(), files(), force=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_bundle(empty, make_manifest(), files(), force=True)  # an empty folder is fine
    assert read_bundle(empty).head_model == "ict-facekit"


def test_invalid_manifest_is_refused_before_writing(tmp_path):
    with pytest.raises(BundleError) as info:
        write_bundle(tmp_path / "head", make_manifest(identity=[float("nan")]), files())
    assert info.value.field == "identity[0]" and "head.json" in str(info.value)
    with pytest.raises(BundleError, match="files"):
        write_bundle(tmp_path / "head", make_manifest(), {"../escape.glb": b"x"})
    assert list(tmp_path.iterdir()) == []


def test_hash_verification_catches_a_modified_file(tmp_path):
    out = tmp_path / "head"
    write_bundle(out, make_manifest(), files())
    data = bytearray((out / "head.glb").read_bytes())
    data[10] ^= 0xFF  # same size, different content
    (out / "head.glb").write_bytes(bytes(data))
    read_bundle(out, verify_hashes=False)  # sizes still match
    with pytest.raises(BundleError, match="sha256") as info:
        read_bundle(out)
    assert info.value.path == str(out / "head.glb")
    (out / "head.glb").write_bytes(b"short")
    with pytest.raises(BundleError, match="bytes"):
        read_bundle(out, verify_hashes=False)
    (out / "head.glb").unlink()
    with pytest.raises(BundleError, match="missing"):
        read_bundle(out, verify_hashes=False)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="head.json"):
        read_bundle(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        read_bundle(tmp_path / "nowhere")


def test_summary_mentions_the_essentials(tmp_path):
    written = write_bundle(tmp_path / "head", make_manifest(), files())
    text = bundle_summary(written)
    for part in ("ict-facekit", "26,719 vertices", "3 shape keys", "d8.jpg (720x720)", "1.80 px",
                 "accepted; identity_prior 0.4", "head.glb", "texture", "single photo", "job-1"):
        assert part in text, part
    assert bundle_summary(make_manifest(quality={}, inputs=[], fits=[]))  # sparse manifests summarise too
