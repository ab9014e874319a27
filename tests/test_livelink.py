"""Live Link Face CSV export and import (``shared/livelink.py``)."""

from __future__ import annotations

import math
import random

import pytest

from backend.retarget.calibration import MODEL_SHAPE_KEYS as MODEL_KEYS
from shared.animation import AnimationClip, euler_ypr_to_quaternion
from shared.bundle_fields import BundleError
from shared.livelink import (
    arkit_curve,
    arkit_to_model,
    model_to_arkit,
    read_livelink_csv,
    write_livelink_csv,
)

# Written out by hand (not from the module) so a reordered constant cannot pass unnoticed.
LIVE_LINK_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,"
    "EyeSquintLeft,EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,"
    "EyeSquintRight,EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,"
    "MouthLeft,MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,"
    "MouthStretchLeft,MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,MouthShrugUpper,"
    "MouthPressLeft,MouthPressRight,MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,MouthUpperUpRight,"
    "BrowDownLeft,BrowDownRight,BrowInnerUp,BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,CheekSquintLeft,"
    "CheekSquintRight,NoseSneerLeft,NoseSneerRight,TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,"
    "LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll")
HEADER = LIVE_LINK_HEADER.split(",")


def make_clip(n: int = 75, fps: float = 30.0, seed: int = 1, jitter: bool = True) -> AnimationClip:
    """Random weights (shared ARKit halves equal), head turns within 40 degrees, eyes within 30."""
    rng = random.Random(seed)
    times = [i / fps + (rng.uniform(-0.2, 0.2) / fps if jitter and i else 0.0) for i in range(n)]
    weights = {k: [rng.random() for _ in range(n)] for k in MODEL_KEYS}
    for base in ("browInnerUp", "cheekPuff"):
        weights[f"{base}_R"] = list(weights[f"{base}_L"])
    rotation = [euler_ypr_to_quaternion(*(math.radians(rng.uniform(-40, 40)) for _ in range(3))) for _ in range(n)]

    def eye() -> list[list[float]]:
        return [[rng.uniform(-30, 30), rng.uniform(-30, 30)] for _ in range(n)]

    return AnimationClip(fps=fps, times=times, shape_keys=list(MODEL_KEYS), weights=weights, head_rotation=rotation,
                         head_translation=[[0.0, 0.0, 0.0]] * n, head_origin=[0.0, 0.0, 0.0], eye_left=eye(),
                         eye_right=eye(), landmark_rmse_px=[1.0] * n)


def csv_text(rows: list[list[str]], header: list[str] = HEADER, newline: str = "\n") -> str:
    return newline.join(",".join(r) for r in [header] + rows) + newline


def row(timecode: str, **values: str) -> list[str]:
    """A 63-column row: zeros except ``values`` (column name: text)."""
    cells = {name: "0" for name in HEADER[2:]} | values
    return [timecode, "61"] + [cells[name] for name in HEADER[2:]]


# ---- writing ----

def test_header_matches_live_link_layout(tmp_path):
    path = tmp_path / "take.csv"
    write_livelink_csv(make_clip(n=3), path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == LIVE_LINK_HEADER
    assert len(HEADER) == 63 and lines[1].split(",")[1] == "61"
    assert all(len(line.split(",")) == 63 for line in lines[1:])
    assert not list(tmp_path.glob(".*.tmp")), "the atomic write left its temp file behind"


@pytest.mark.parametrize("start", [0.0, 13 * 3600 + 59 * 60 + 59.5, 86400 - 0.5])  # plain, hour, midnight
def test_round_trip_keeps_weights_times_and_angles(tmp_path, start):
    clip = make_clip()
    path = tmp_path / "take.csv"
    write_livelink_csv(clip, path, start_seconds=start)
    back = read_livelink_csv(path, list(MODEL_KEYS))
    assert back.shape_keys == list(MODEL_KEYS) and back.frame_count == clip.frame_count
    half_sub_frame = 0.5 / (30 * 1000)
    assert max(abs(a - b) for a, b in zip(back.times, clip.times)) <= half_sub_frame + 1e-9
    assert max(abs(a - b) for k in MODEL_KEYS for a, b in zip(back.weights[k], clip.weights[k])) < 1e-4
    for q, p in zip(back.head_rotation, clip.head_rotation):
        assert abs(sum(a * b for a, b in zip(q, p))) > 1 - 1e-9
    for got, want in ((back.eye_left, clip.eye_left), (back.eye_right, clip.eye_right)):
        assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w)) < 1e-4
    assert back.fps == 30.0 and back.source == {"file": "take.csv"}
    assert any("TongueOut" in note for note in back.notes)


def test_sign_conventions_and_units(tmp_path):
    clip = make_clip(n=2, jitter=False)
    # Face turned 20 degrees to the subject's left, tipped 10 degrees down, tilted 15 degrees towards
    # the subject's right shoulder (left ear up); left eye looks up and to the subject's left.
    clip.head_rotation = [euler_ypr_to_quaternion(math.radians(20), math.radians(10), math.radians(15))] * 2
    clip.eye_left = [[15.0, 5.0]] * 2
    path = tmp_path / "signs.csv"
    write_livelink_csv(clip, path)
    first = dict(zip(HEADER, path.read_text().splitlines()[1].split(",")))
    assert float(first["HeadYaw"]) == pytest.approx(-math.radians(20), abs=1e-6)
    assert float(first["HeadPitch"]) == pytest.approx(math.radians(10), abs=1e-6)
    assert float(first["HeadRoll"]) == pytest.approx(-math.radians(15), abs=1e-6)
    assert float(first["LeftEyeYaw"]) == pytest.approx(-math.radians(15), abs=1e-6)
    assert float(first["LeftEyePitch"]) == pytest.approx(-math.radians(5), abs=1e-6)
    assert float(first["LeftEyeRoll"]) == 0.0
    write_livelink_csv(clip, path, angle_unit="half_turns")
    first = dict(zip(HEADER, path.read_text().splitlines()[1].split(",")))
    assert float(first["HeadYaw"]) == pytest.approx(-20 / 180, abs=1e-6)
    back = read_livelink_csv(path, list(MODEL_KEYS), angle_unit="half_turns")
    assert abs(sum(a * b for a, b in zip(back.head_rotation[0], clip.head_rotation[0]))) > 1 - 1e-9


# ---- mapping ----

def test_left_right_mapping():
    assert arkit_curve("eyeBlink_L") == "EyeBlinkLeft" and arkit_curve("eyeBlink_R") == "EyeBlinkRight"
    assert arkit_curve("mouthLeft") == "MouthLeft" and arkit_curve("jawRight") == "JawRight"
    assert arkit_curve("browInnerUp_R") == "BrowInnerUp" and arkit_curve("cheekPuff_L") == "CheekPuff"
    assert arkit_curve("tongueOut") == "TongueOut" and arkit_curve("neckTwist_L") is None
    weights = {k: [0.0, 0.0] for k in MODEL_KEYS} | {
        "eyeBlink_L": [1.0, 0.5], "eyeBlink_R": [0.0, 0.25], "browInnerUp_L": [0.2, 1.0], "browInnerUp_R": [0.6, 0.0],
        "cheekPuff_L": [1.0, 1.0], "cheekPuff_R": [0.0, 1.0]}
    curves = model_to_arkit(weights)
    assert len(curves) == 52 and list(curves)[:2] == ["EyeBlinkLeft", "EyeLookDownLeft"]
    assert curves["EyeBlinkLeft"] == [1.0, 0.5] and curves["EyeBlinkRight"] == [0.0, 0.25]
    assert curves["BrowInnerUp"] == pytest.approx([0.4, 0.5]) and curves["CheekPuff"] == [0.5, 1.0]
    assert curves["TongueOut"] == [0.0, 0.0]
    model = arkit_to_model(curves, list(MODEL_KEYS))
    assert model["browInnerUp_L"] == model["browInnerUp_R"] == pytest.approx([0.4, 0.5])
    assert model["eyeBlink_L"] == [1.0, 0.5] and model["eyeBlink_R"] == [0.0, 0.25]


# ---- reading real-style files ----

def test_reads_real_style_file_with_bom_and_crlf(tmp_path):
    rows = [row("14:03:52:28.207", EyeBlinkLeft="0.81234567", JawOpen="0.0123", BrowInnerUp="0.3", HeadYaw="0.1",
                HeadPitch="-0.05", LeftEyeYaw="0.2", LeftEyePitch="-0.1"),
            row("14:03:52:29.207", EyeBlinkLeft="0.7", JawOpen="0.02", TongueOut="0.9"),
            row("14:03:52:30.207", EyeBlinkLeft="1.02", JawOpen="-0.01")]
    path = tmp_path / "MySlate_3_iPhone.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text(rows, newline="\r\n").encode("utf-8"))
    clip = read_livelink_csv(path, list(MODEL_KEYS))
    assert clip.times == pytest.approx([0.0, 1 / 60, 2 / 60])  # frame numbers past 29: 60 fps timecode
    assert clip.fps == 60.0
    assert clip.weights["eyeBlink_L"] == pytest.approx([0.81234567, 0.7, 1.0])  # clamped from 1.02
    assert clip.weights["jawOpen"] == pytest.approx([0.0123, 0.02, 0.0])  # clamped from -0.01
    assert clip.weights["browInnerUp_L"][0] == clip.weights["browInnerUp_R"][0] == pytest.approx(0.3)
    assert clip.eye_left[0] == pytest.approx([-math.degrees(0.2), math.degrees(0.1)])
    _, x, y, _ = clip.head_rotation[0]
    assert y < 0 and x < 0  # HeadYaw > 0: turned to the subject's right; HeadPitch < 0: tipped up
    assert clip.head_rotation[1] == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert any("clamped 2" in note for note in clip.notes)
    clip.validate()


def test_reads_export_without_head_and_eye_columns(tmp_path):
    header = HEADER[:54]
    rows = [r[:54] for r in (row("00:00:01:00.000", JawOpen="0.5"), row("00:00:01:01.000", JawOpen="0.6"))]
    path = tmp_path / "old.csv"
    path.write_text(csv_text(rows, header=header))
    clip = read_livelink_csv(path, list(MODEL_KEYS), fps=30)
    assert clip.times == pytest.approx([0.0, 1 / 30]) and clip.fps == 30.0
    assert clip.weights["jawOpen"] == pytest.approx([0.5, 0.6])
    assert clip.head_rotation == [[1.0, 0.0, 0.0, 0.0]] * 2 and clip.eye_right == [[0.0, 0.0]] * 2
    assert any("no head rotation columns" in note for note in clip.notes)


def test_repeated_timecodes_are_dropped_with_a_note(tmp_path):
    rows = [row("00:00:00:00.000", JawOpen="0.1"), row("00:00:00:01.000", JawOpen="0.2"),
            row("00:00:00:01.000", JawOpen="0.3"), row("00:00:00:00.500", JawOpen="0.4"),
            row("00:00:00:02.000", JawOpen="0.5")]
    path = tmp_path / "dup.csv"
    path.write_text(csv_text(rows))
    clip = read_livelink_csv(path, list(MODEL_KEYS), fps=30)
    assert clip.weights["jawOpen"] == pytest.approx([0.1, 0.2, 0.5])
    assert any("dropped 2 rows" in note for note in clip.notes)


# ---- bad input: each error names the file and the line or column ----

def bad(tmp_path, text: str, *needles: str, **kwargs) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(BundleError) as info:
        read_livelink_csv(path, list(MODEL_KEYS), **kwargs)
    message = str(info.value)
    assert "bad.csv" in message
    for needle in needles:
        assert needle in message, message


def test_missing_header_column(tmp_path):
    header = [h for h in HEADER if h != "MouthPucker"]
    bad(tmp_path, csv_text([row("00:00:00:00.000")[:-1]], header=header), "line 1", "MouthPucker")


def test_partial_head_columns(tmp_path):
    header = [h for h in HEADER if h != "HeadRoll"]
    bad(tmp_path, csv_text([row("00:00:00:00.000")[:-1]], header=header), "HeadRoll")


def test_non_numeric_value(tmp_path):
    rows = [row("00:00:00:00.000"), row("00:00:00:01.000", JawOpen="abc")]
    bad(tmp_path, csv_text(rows), "line 3", "JawOpen", "'abc'")


def test_non_finite_value(tmp_path):
    bad(tmp_path, csv_text([row("00:00:00:00.000", HeadYaw="nan")]), "line 2", "HeadYaw")


def test_wrong_column_count(tmp_path):
    rows = [row("00:00:00:00.000"), row("00:00:00:01.000")[:-2]]
    bad(tmp_path, csv_text(rows), "line 3", "61 columns", "63")


def test_bad_timecode(tmp_path):
    bad(tmp_path, csv_text([row("00:00:61:00.000")]), "line 2", "Timecode")
    bad(tmp_path, csv_text([row("yesterday")]), "line 2", "Timecode")


def test_empty_file_and_header_only(tmp_path):
    bad(tmp_path, "", "empty")
    bad(tmp_path, "\ufeff\r\n\r\n", "empty")
    bad(tmp_path, LIVE_LINK_HEADER + "\n", "no data rows", "line 1")


def test_time_going_back_more_than_a_second(tmp_path):
    rows = [row("00:00:05:00.000"), row("00:00:05:01.000"), row("00:00:03:00.000")]
    bad(tmp_path, csv_text(rows), "line 4", "goes back")


def test_frame_number_beyond_the_given_rate(tmp_path):
    bad(tmp_path, csv_text([row("00:00:00:45.000")]), "line 2", "frame 45", fps=30)
    bad(tmp_path, csv_text([row("00:00:00:75.000")]), "75", "fps")  # past 59: the rate cannot be inferred


def test_missing_file(tmp_path):
    with pytest.raises(BundleError, match="missing"):
        read_livelink_csv(tmp_path / "nope.csv", list(MODEL_KEYS))


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="timecode_fps"):
        write_livelink_csv(make_clip(n=2), tmp_path / "x.csv", timecode_fps=29.97)
    with pytest.raises(ValueError, match="angle_unit"):
        write_livelink_csv(make_clip(n=2), tmp_path / "x.csv", angle_unit="grads")
    assert not list(tmp_path.iterdir())
