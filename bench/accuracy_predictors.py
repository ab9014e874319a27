"""Predictors for the accuracy benchmark: the samples with their ground truth, what a method
predicts for one photo, and the methods (the real pipeline, an oracle, a perturbed oracle, the mean face)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


# ----------------------------------------------------------------------------- predictions


@dataclass
class Prediction:
    """What a method predicts for one photo (the fields of ``reconstruct_photos``' result)."""

    identity: np.ndarray | None  # [I]
    expression: np.ndarray | None = None  # [E]
    rotation: np.ndarray | None = None  # [3] axis-angle, model -> OpenCV camera
    translation: np.ndarray | None = None  # [3] cm
    focal: float | None = None  # px
    vertices_cm: np.ndarray | None = None  # [V, 3] neutral-expression identity mesh, if given
    seconds: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)  # method diagnostics copied into the row


class PredictionFailed(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


@dataclass
class Sample:
    name: str
    record: dict
    identity: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray

    def image(self, data: Path, size: str) -> Path:
        return data / self.record["images"][size]

    def focal(self, size: str) -> float:
        return float(self.record["intrinsics"][size]["fx"])


def load_samples(data: Path, expression_names: list[str]) -> list[Sample]:
    samples = []
    for path in sorted(Path(data).glob("[0-9][0-9][0-9][0-9].json")):
        rec = json.loads(path.read_text())
        samples.append(Sample(
            name=path.stem, record=rec, identity=np.asarray(rec["identity"], np.float64),
            expression=np.array([rec["expression"].get(n, 0.0) for n in expression_names], np.float64),
            rotation=np.asarray(rec["rotation_matrix"], np.float64), translation=np.asarray(rec["translation"], np.float64)))
    return samples


Predictor = Callable[[Sample, str, Path, Path], Prediction]


def build_options(cls, options: dict):
    """A dataclass instance from ``{"field": value, "nested.field": value}`` (one level of nesting)."""
    flat = {k: v for k, v in options.items() if "." not in k}
    obj = cls(**flat)
    for key, value in options.items():
        if "." in key:
            head, rest = key.split(".", 1)
            setattr(obj, head, dataclasses.replace(getattr(obj, head), **{rest: value}))
    return obj


def reconstruct_predictor(options: dict) -> Predictor:
    """The real pipeline on one photo at a time: ``backend.reconstruct`` (one ``Reconstructor``
    reused for all images when the module has it, else ``reconstruct_photos`` per image)."""
    import backend.reconstruct as api  # the API under test

    options = {"progress": False, **options}
    try:
        opts = build_options(api.ReconstructOptions, options)
    except TypeError:  # an option this version does not have (e.g. progress)
        options.pop("progress")
        opts = build_options(api.ReconstructOptions, options)
    reconstructor = api.Reconstructor(opts) if hasattr(api, "Reconstructor") else None

    def run(image: Path, work: Path):
        if reconstructor is not None:
            return reconstructor.reconstruct([Path(image)], work, force=True)
        return api.reconstruct_photos([Path(image)], work, options=opts, force=True)

    def predict(sample: Sample, size: str, image: Path, work: Path) -> Prediction:
        from backend.errors import HeadRigError, InputError

        t0 = time.perf_counter()
        try:
            result = run(image, work)
        except InputError as exc:
            raise PredictionFailed(exc.code, exc.one_line()) from exc
        except HeadRigError as exc:
            raise PredictionFailed(type(exc).__name__, str(exc)) from exc
        seconds = time.perf_counter() - t0
        fits = list(getattr(result, "fits", None) or [])
        fit = fits[0] if fits else None

        def field(obj, name):
            value = getattr(obj, name, None) if obj is not None else None
            return None if value is None else np.asarray(value, np.float64)

        focal = getattr(fit, "focal", None) if fit is not None else None
        extra = {k: float(getattr(fit, k)) for k in ("landmark_rmse_px", "landmark_rmse_iod") if getattr(fit, k, None) is not None}
        return Prediction(identity=field(result, "identity"), expression=field(fit, "expression"),
                          rotation=field(fit, "rotation"), translation=field(fit, "translation"),
                          focal=None if focal is None else float(np.asarray(focal).reshape(-1)[0]),
                          vertices_cm=field(result, "vertices_cm"), seconds=seconds, extra=extra)

    return predict


def oracle_predictor(options: dict) -> Predictor:
    """The ground truth itself: every error must come out 0 (a check of the metrics)."""

    def predict(sample: Sample, size: str, image: Path, work: Path) -> Prediction:
        from scipy.spatial.transform import Rotation

        return Prediction(identity=sample.identity.copy(), expression=sample.expression.copy(),
                          rotation=Rotation.from_matrix(sample.rotation).as_rotvec(), translation=sample.translation.copy(),
                          focal=sample.focal(size))

    return predict


def perturbed_predictor(options: dict) -> Predictor:
    """Ground truth plus noise (identity sigma ``identity_sigma``, expression sigma, 2 deg, 5 % focal)."""
    sigma = float(options.get("identity_sigma", 0.3))
    expr_sigma = float(options.get("expression_sigma", 0.1))
    seed = int(options.get("seed", 0))

    def predict(sample: Sample, size: str, image: Path, work: Path) -> Prediction:
        from scipy.spatial.transform import Rotation

        rng = np.random.default_rng([seed, int(sample.name), int(size)])
        rot = Rotation.from_rotvec(rng.normal(0, np.radians(2.0 / np.sqrt(3)), 3)) * Rotation.from_matrix(sample.rotation)
        return Prediction(identity=sample.identity + rng.normal(0, sigma, sample.identity.shape),
                          expression=np.clip(sample.expression + rng.normal(0, expr_sigma, sample.expression.shape), 0, 1),
                          rotation=rot.as_rotvec(), translation=sample.translation + rng.normal(0, 0.5, 3),
                          focal=sample.focal(size) * (1 + rng.normal(0, 0.05)))

    return predict


def mean_face_predictor(options: dict) -> Predictor:
    """The baseline as a predictor: identity 0, neutral expression, no pose."""

    def predict(sample: Sample, size: str, image: Path, work: Path) -> Prediction:
        return Prediction(identity=np.zeros_like(sample.identity), expression=np.zeros_like(sample.expression))

    return predict


PREDICTORS = {"reconstruct": reconstruct_predictor, "oracle": oracle_predictor, "perturbed": perturbed_predictor,
              "mean": mean_face_predictor}
