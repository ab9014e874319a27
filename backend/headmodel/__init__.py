"""The parametric head model: the ICT-FaceKit converter, its cached asset, and a torch model."""

from backend.headmodel.asset import HeadModelAsset, load_head_model

__all__ = ["HeadModelAsset", "load_head_model"]
