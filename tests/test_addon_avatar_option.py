"""The Build head box's Avatar setting, in real bpy: it offers the service's presets, sends the chosen
one with a video, and refuses to send it with photos only (the avatar is trained from a clip)."""

from __future__ import annotations

import importlib

import pytest

from shared.protocol import AVATAR_PRESETS
from tests.conftest import MEDIA

bpy = pytest.importorskip("bpy")

pytestmark = pytest.mark.blender


def test_avatar_setting_offers_every_preset(registered_addon):
    items = bpy.context.scene.headrig.bl_rna.properties["avatar"].enum_items
    assert [i.identifier for i in items] == ["NONE", *AVATAR_PRESETS]
    assert bpy.context.scene.headrig.avatar == "NONE"  # a plain head unless asked


def test_avatar_goes_with_a_video_only(registered_addon):
    avatar_param = importlib.import_module("headrig.operators").avatar_param
    video, photo = str(MEDIA / "video" / "d0.mp4"), str(MEDIA / "images" / "d8.jpg")
    assert avatar_param("balanced", [video], [video]) == ({"avatar": "balanced"}, "")
    assert avatar_param("NONE", [photo], []) == ({}, "")
    params, problem = avatar_param("fast", [photo], [])
    assert params == {} and "d8.jpg" in problem and "video" in problem


def test_build_with_an_avatar_and_photos_is_refused_before_sending(registered_addon):
    reg = importlib.import_module("headrig.jobs").registry()
    before = set(reg.jobs)
    bpy.ops.headrig.clear_photos()
    assert bpy.ops.headrig.add_photos(filepath=str(MEDIA / "images" / "d8.jpg")) == {"FINISHED"}
    bpy.context.scene.headrig.avatar = "fast"
    try:
        with pytest.raises(RuntimeError) as refused:
            bpy.ops.headrig.build_head()
    finally:
        bpy.context.scene.headrig.avatar = "NONE"
        bpy.ops.headrig.clear_photos()
    assert "d8.jpg" in str(refused.value) and "trained from a video" in str(refused.value)
    assert set(reg.jobs) == before  # nothing was sent
