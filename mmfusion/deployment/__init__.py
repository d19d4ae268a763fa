"""Deployment of mmfusion models: ONNX export (:mod:`.export`), ONNX Runtime inference (:mod:`.runtime`) and the
post-processing both share with PyTorch inference (:mod:`.postprocess`).

Nothing here is imported by training or by ``tools/infer.py``; the tools are ``tools/deployment/pytorch2onnx.py`` and
``tools/deployment/onnx_infer.py`` (README, "Deploy").
"""
