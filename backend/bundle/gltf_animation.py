"""glTF animation of a head's morph weights and transform (one clip, linear keys).

glTF stores rotations as (x, y, z, w) quaternions and morph weights as one flat output of
frames x targets; both use the same time input. Quaternions are made sign-continuous first, since
linear interpolation between q and a nearby -q would swing through the long way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pygltflib as gl

from backend.fitting.geometry import continuous_quaternions


@dataclass
class NodeAnimation:
    """times: [N] seconds; weights: [N, E] in the mesh's target order; rotation: [N, 4] (w, x, y, z)
    in glTF axes; translation: [N, 3] metres."""

    name: str
    times: np.ndarray
    weights: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray


def add_node_animation(gltf: gl.GLTF2, binary, node: int, anim: NodeAnimation) -> None:
    """Append samplers and channels for ``anim`` on ``node``; ``binary`` is the writer's buffer builder."""
    n = len(anim.times)
    times = binary.array(np.asarray(anim.times, np.float32), "SCALAR", None, minmax=True)
    quat = continuous_quaternions(anim.rotation)[:, [1, 2, 3, 0]].astype(np.float32)  # to x, y, z, w
    outputs = {
        "weights": binary.array(np.asarray(anim.weights, np.float32).reshape(-1), "SCALAR", None),
        "rotation": binary.array(quat, "VEC4", None),
        "translation": binary.array(np.asarray(anim.translation, np.float32).reshape(n, 3), "VEC3", None),
    }
    samplers, channels = [], []
    for path, output in outputs.items():
        samplers.append(gl.AnimationSampler(input=times, output=output, interpolation="LINEAR"))
        channels.append(gl.AnimationChannel(sampler=len(samplers) - 1, target=gl.AnimationChannelTarget(node=node, path=path)))
    gltf.animations.append(gl.Animation(name=anim.name, samplers=samplers, channels=channels))
