"""The avatar presets: one list of names for the CLI, the service and the trainer's settings."""

from dataclasses import replace

import pytest

from shared.protocol import AVATAR_PRESETS
from backend.avatar.train import PRESETS
from backend.cli import build_parser
from backend.service.job_kinds import JobFailed, run_reconstruct


def test_every_named_preset_has_settings_and_no_more():
    assert set(PRESETS) == set(AVATAR_PRESETS)


def test_balanced_is_fast_with_twice_the_steps():
    fast, balanced = PRESETS["fast"], PRESETS["balanced"]
    assert balanced.steps == 2 * fast.steps
    assert replace(balanced, steps=fast.steps) == fast


def test_cli_takes_every_preset_and_refuses_others(capsys):
    parser = build_parser()
    for name in AVATAR_PRESETS:
        assert parser.parse_args(["reconstruct", "clip.mp4", "--avatar", name, "-o", "out"]).avatar == name
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["reconstruct", "clip.mp4", "--avatar", "best", "-o", "out"])
    assert exit_info.value.code == 2
    assert "balanced" in capsys.readouterr().err


def test_service_refuses_an_unknown_preset_naming_the_known_ones(tmp_path):
    with pytest.raises(JobFailed) as failed:
        run_reconstruct(None, "job", {"avatar": "best"}, [], tmp_path)
    assert failed.value.code == "bad_params"
    assert all(name in failed.value.message for name in AVATAR_PRESETS)
