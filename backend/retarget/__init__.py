"""Retargeting: a tracked ``animation.json`` clip onto a head's shape keys.

``calibration`` holds the per-key mapping (neutral subtraction, gain, offset, clamp) and
``retarget_clip``; ``one_euro`` the One Euro filter used to smooth weights and head rotation.
"""

from .calibration import MODEL_SHAPE_KEYS, RetargetConfig, choose_neutral_frame, neutral_levels, retarget_clip, rom_gains
from .one_euro import OneEuroConfig, continuous_hemisphere, one_euro_filter, one_euro_quaternion

__all__ = [
    "MODEL_SHAPE_KEYS", "OneEuroConfig", "RetargetConfig", "choose_neutral_frame", "continuous_hemisphere",
    "neutral_levels", "one_euro_filter", "one_euro_quaternion", "retarget_clip", "rom_gains",
]
