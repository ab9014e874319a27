"""JobStore: records, transitions, safe input paths, chunked uploads, crash recovery."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from backend.service.jobstore import IllegalTransition, JobStore, StoreError, UnknownJob, UnsafePath, UploadError

DATA = b"hello headrig " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def _decl(name="a.jpg", data=DATA):
    return {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _upload(store, job_id, name="a.jpg", data=DATA, chunk=4096):
    for offset in range(0, len(data), chunk):
        store.write_input_chunk(job_id, name, offset, data[offset:offset + chunk])
    return store.finish_input(job_id, name)


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "data")


def test_create_get_list_update(store, tmp_path):
    a = store.create("probe", {"seconds": 1}, "alice", [_decl()])
    b = store.create("probe", {}, "bob", [])
    assert a.state == "uploading" and b.state == "queued" and len(a.job_id) == 32
    assert store.get(a.job_id) == a and store.get("0" * 32) is None and store.get("../x") is None
    assert [r.job_id for r in store.list()] == [a.job_id, b.job_id]
    assert [r.job_id for r in store.list(client="bob")] == [b.job_id]
    rec = store.update(b.job_id, state="running")
    rec = store.update(b.job_id, progress={"stage": "wait", "fraction": 0.5, "message": "half"})
    assert rec.progress["fraction"] == 0.5 and rec.state == "running"
    files = [{"name": "probe.json", "size": 3, "sha256": "0" * 64}]
    store.update(b.job_id, state="done", result_files=files)
    # Persisted: a fresh store reads the same records from state.json.
    again = JobStore(tmp_path / "data")
    assert again.get(b.job_id) == store.get(b.job_id) and again.get(b.job_id).result_files == files
    lines = [json.loads(line) for line in (tmp_path / "data" / "journal.jsonl").read_text().splitlines()]
    assert [(x["job_id"], x["state"]) for x in lines][-3:] == [(b.job_id, "queued"), (b.job_id, "running"), (b.job_id, "done")]
    # Callers get copies: mutating one does not change the store.
    got = store.get(b.job_id)
    got.params["x"] = 1
    assert store.get(b.job_id).params == {}


def test_request_key_is_idempotent(store):
    a = store.create("probe", {"seconds": 1}, "alice", [_decl()], request_key="k1")
    assert store.create("probe", {"seconds": 1}, "alice", [_decl()], request_key="k1").job_id == a.job_id
    assert store.create("probe", {"seconds": 1}, "bob", [_decl()], request_key="k1").job_id != a.job_id
    with pytest.raises(StoreError) as err:
        store.create("probe", {"seconds": 2}, "alice", [_decl()], request_key="k1")
    assert err.value.code == "request_key_reused" and a.job_id in str(err.value)
    assert len(store.list(client="alice")) == 1


def test_illegal_transitions_refused(store):
    job = store.create("probe", {}, "c", [_decl()])
    with pytest.raises(IllegalTransition, match="uploading -> running"):
        store.update(job.job_id, state="running")
    with pytest.raises(IllegalTransition, match=r"inputs not complete: a.jpg \(0 of 14000 bytes\)"):
        store.update(job.job_id, state="queued")
    with pytest.raises(StoreError, match="needs error"):
        store.update(job.job_id, state="failed")
    with pytest.raises(StoreError, match="cannot update kind"):
        store.update(job.job_id, kind="other")
    with pytest.raises(StoreError, match="progress must be"):
        store.update(job.job_id, progress={"stage": "x", "fraction": 2, "message": ""})
    with pytest.raises(UnknownJob):
        store.update("f" * 32, state="queued")
    store.update(job.job_id, state="cancelled")
    for change in ({"state": "queued"}, {"state": "done"}, {"progress": {"stage": "", "fraction": 0, "message": ""}}):
        with pytest.raises(IllegalTransition, match="final state"):
            store.update(job.job_id, **change)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "..", ".", "x\x00", "a\\b", "x" * 300, "", ".hidden",
                                  "a.jpg.part", "tab\tname", 5])
def test_unsafe_input_names_refused(store, name):
    job = store.create("probe", {}, "c", [_decl()])
    with pytest.raises(UnsafePath):
        store.input_path(job.job_id, name)
    with pytest.raises(StoreError):
        store.create("probe", {}, "c", [{"name": name, "size": 1, "sha256": "0" * 64}])


def test_input_path_checks_job_id_and_symlinks(store, tmp_path):
    job = store.create("probe", {}, "c", [_decl()])
    with pytest.raises(UnsafePath):
        store.input_path("../" + job.job_id, "a.jpg")
    path = store.input_path(job.job_id, "a.jpg")
    assert path.parent.name == "inputs" and path.name == "a.jpg"
    (path.parent / "link.jpg").symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="outside"):
        store.input_path(job.job_id, "link.jpg")


def test_chunked_upload_and_verify(store):
    job = store.create("probe", {}, "c", [_decl(), _decl("b.png", b"other")])
    assert store.write_input_chunk(job.job_id, "a.jpg", 0, DATA[:100]) == 100
    assert store.get(job.job_id).inputs[0]["received"] == 100
    with pytest.raises(UploadError, match="expected offset 100, got 0") as err:
        store.write_input_chunk(job.job_id, "a.jpg", 0, DATA[:100])
    assert err.value.code == "bad_offset"
    with pytest.raises(UploadError, match="incomplete|received 100"):
        store.finish_input(job.job_id, "a.jpg")
    with pytest.raises(UploadError, match="exceed"):
        store.write_input_chunk(job.job_id, "a.jpg", 100, DATA + b"x")
    with pytest.raises(UploadError, match="declared no input 'c.jpg'"):
        store.write_input_chunk(job.job_id, "c.jpg", 0, b"x")
    store.write_input_chunk(job.job_id, "a.jpg", 100, DATA[100:])
    rec = store.finish_input(job.job_id, "a.jpg")
    assert rec.inputs[0]["received"] == len(DATA) and store.input_path(job.job_id, "a.jpg").read_bytes() == DATA
    with pytest.raises(UploadError, match="already complete"):
        store.write_input_chunk(job.job_id, "a.jpg", 0, b"x")
    # Same size, wrong content: refused and the partial file discarded so the client starts over.
    store.write_input_chunk(job.job_id, "b.png", 0, b"OTHER")
    with pytest.raises(UploadError, match="sha256") as err:
        store.finish_input(job.job_id, "b.png")
    assert err.value.code == "hash_mismatch"
    assert not any(store.input_path(job.job_id, "a.jpg").parent.glob("*.part"))
    _upload(store, job.job_id, "b.png", b"other")
    assert store.update(job.job_id, state="queued").inputs_complete
    with pytest.raises(UploadError, match="only while uploading"):
        store.write_input_chunk(job.job_id, "b.png", 0, b"x")


def test_recover_cleans_temp_files_and_settles_jobs(store, tmp_path):
    data = tmp_path / "data"
    uploading = store.create("probe", {}, "c", [_decl()])
    store.write_input_chunk(uploading.job_id, "a.jpg", 0, DATA[:10])
    running = store.create("probe", {}, "c", [])
    store.update(running.job_id, state="running")
    queued = store.create("probe", {}, "c", [_decl()])
    _upload(store, queued.job_id)
    store.update(queued.job_id, state="queued")
    damaged = store.create("probe", {}, "c", [_decl()])
    _upload(store, damaged.job_id)
    store.update(damaged.job_id, state="queued")
    store.input_path(damaged.job_id, "a.jpg").write_bytes(b"changed")
    # What a crash can leave: a half-written state file, a partial upload, a result temp folder, a half-created job.
    folder = data / "jobs" / running.job_id
    (folder / "state.json.tmp").write_text('{"half": ')
    (folder / "inputs" / "x.jpg.part").write_bytes(b"part")
    (folder / ".result.tmp-abc").mkdir()
    (data / "jobs" / f".tmp-{'e' * 32}").mkdir()

    fresh = JobStore(data)  # a restarted server
    assert fresh.recover() == [queued.job_id]
    assert fresh.get(running.job_id).state == "failed"
    assert fresh.get(running.job_id).error == {"code": "interrupted",
                                               "message": "the server stopped while this job ran; submit it again"}
    assert fresh.get(uploading.job_id).error["code"] == "upload_interrupted"
    assert fresh.get(queued.job_id).state == "queued"
    assert fresh.get(damaged.job_id).error["code"] == "inputs_missing"
    leftovers = [*data.rglob("*.tmp*"), *data.rglob("*.part")]
    assert leftovers == []
    assert JobStore(data).get(running.job_id).state == "failed"  # durable, not just in memory


def test_recover_trusts_only_valid_results(store, tmp_path):
    # A bundle folder without head.json is not a finished reconstruct result.
    broken = store.create("reconstruct", {}, "c", [])
    store.update(broken.job_id, state="running")
    (store.result_dir(broken.job_id)).mkdir()
    (store.result_dir(broken.job_id) / "head.glb").write_bytes(b"glb")
    # A probe whose worker finished (result renamed into place) but whose "done" never got recorded.
    finished = store.create("probe", {}, "c", [])
    store.update(finished.job_id, state="running")
    store.result_dir(finished.job_id).mkdir()
    (store.result_dir(finished.job_id) / "probe.json").write_text('{"inputs": []}')
    # A done job whose result vanished.
    lost = store.create("probe", {}, "c", [])
    store.update(lost.job_id, state="running")
    store.update(lost.job_id, state="done", result_files=[{"name": "probe.json", "size": 2, "sha256": "0" * 64}])

    fresh = JobStore(tmp_path / "data")
    assert fresh.recover() == []
    assert fresh.get(broken.job_id).error["code"] == "interrupted"
    assert not fresh.result_dir(broken.job_id).exists()
    rec = fresh.get(finished.job_id)
    assert rec.state == "done" and [f["name"] for f in rec.result_files] == ["probe.json"]
    assert rec.result_files[0]["sha256"] == hashlib.sha256(b'{"inputs": []}').hexdigest()
    assert fresh.get(lost.job_id).error["code"] == "result_lost"
    assert fresh.recover() == []  # idempotent
    assert fresh.get(finished.job_id).state == "done"


def test_create_validation_is_precise(store):
    with pytest.raises(StoreError, match="kind must be"):
        store.create("Probe!", {}, "c", [])
    with pytest.raises(StoreError, match="params must be plain JSON"):
        store.create("probe", {"x": object()}, "c", [])
    with pytest.raises(StoreError, match=r"inputs\[0\].sha256"):
        store.create("probe", {}, "c", [{"name": "a", "size": 1, "sha256": "xyz"}])
    with pytest.raises(StoreError, match=r"inputs\[1\].name 'a' is given twice"):
        store.create("probe", {}, "c", [_decl("a"), _decl("a")])
    with pytest.raises(StoreError, match="client"):
        store.create("probe", {}, "", [])
    small = JobStore(store.data_dir, max_input_bytes=10)
    with pytest.raises(StoreError, match="at most 10") as err:
        small.create("probe", {}, "c", [_decl()])
    assert err.value.code == "too_large"
    assert os.listdir(store.jobs_dir) == []
