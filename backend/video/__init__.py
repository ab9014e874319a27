"""Video input: decoding, per-frame landmarks, identity from many frames, tracking, gaze."""
