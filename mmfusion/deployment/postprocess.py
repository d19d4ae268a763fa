"""What turns the exported graph's outputs into mmdet/mmseg data samples: the stock code that follows the head in
PyTorch inference, called with those outputs, so ONNX Runtime and PyTorch give the same result files.

The graph ends where the head's work on learned weights ends (see :mod:`mmfusion.deployment.export`):

* semantic (mmseg ``EncoderDecoder`` + ``Mask2FormerHead``): ``seg_logits`` (B, C, H, W) at the input size, i.e.
  ``decode_head.predict``; left for Python: mmseg's ``postprocess_result`` (crop the padding, resize to the original
  image, argmax);
* instance / panoptic (mmdet ``Mask2Former``): the last decoder layer's query class logits (B, Q, C + 1) and mask
  logits (B, Q, H / 4, W / 4); left for Python: the head's upsampling of the masks to the batch input size, mmdet's
  ``MaskFormerFusionHead.predict`` (panoptic merge, top-k instances) and ``add_pred_to_datasample``. Upsampling 100+
  masks to full size inside the graph would only make the output tensor huge.

The functions call the stock methods unbound, on a stand-in holding the few attributes they read, rather than a copy
of their code: a later mmdet/mmseg fix applies to both paths.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['SEMANTIC', 'INSTANCE', 'PANOPTIC', 'seg_postprocess', 'det_postprocess', 'build_fusion_head',
           'det_head_predict']

SEMANTIC, INSTANCE, PANOPTIC = 'semantic', 'instance', 'panoptic'


def seg_postprocess(seg_logits: Tensor, data_samples: Sequence, align_corners: bool,
                    threshold: Optional[float] = None) -> list:
    """mmseg's ``BaseSegmentor.postprocess_result`` on ``seg_logits``.

    Args:
        seg_logits (Tensor): (B, C, H, W) class scores at the (padded) input size, as ``decode_head.predict`` gives.
        data_samples (Sequence[SegDataSample]): The batch's samples (their metainfo: padding, flip, ori_shape).
        align_corners (bool): The segmentor's ``align_corners`` (its decode head's).
        threshold (float, optional): The decode head's ``threshold``, read only for a single-channel output
            (mmseg's Mask2FormerHead has none: it always has a channel per class).

    Returns:
        list[SegDataSample]: ``data_samples`` with ``seg_logits`` and ``pred_sem_seg`` set.
    """
    from mmseg.models.segmentors.base import BaseSegmentor
    stand_in = SimpleNamespace(align_corners=align_corners, decode_head=SimpleNamespace(threshold=threshold))
    return BaseSegmentor.postprocess_result(stand_in, seg_logits, list(data_samples))


def det_head_predict(cls_logits: Tensor, mask_logits: Tensor, data_samples: Sequence) -> tuple[Tensor, Tensor]:
    """The tail of mmdet's ``MaskFormerHead.predict``: the masks upsampled (bilinear) to the batch input size."""
    img_shape = data_samples[0].metainfo['batch_input_shape']
    masks = F.interpolate(mask_logits, size=(img_shape[0], img_shape[1]), mode='bilinear', align_corners=False)
    return cls_logits, masks


def det_postprocess(cls_logits: Tensor, mask_logits: Tensor, data_samples: Sequence, fusion_head) -> list:
    """mmdet's Mask2Former prediction after the head's forward: upsampling, fusion head, data samples.

    Args:
        cls_logits (Tensor): (B, Q, C + 1) query class logits of the last decoder layer.
        mask_logits (Tensor): (B, Q, h, w) mask logits of the last decoder layer (h, w: a quarter of the input).
        data_samples (Sequence[DetDataSample]): The batch's samples (img_shape, ori_shape, batch_input_shape).
        fusion_head: The model's ``panoptic_fusion_head`` (parameter-free; see :func:`build_fusion_head`).

    Returns:
        list[DetDataSample]: ``data_samples`` with ``pred_panoptic_seg`` / ``pred_instances`` set.
    """
    from mmdet.models.detectors.maskformer import MaskFormer
    cls_logits, masks = det_head_predict(cls_logits, mask_logits, data_samples)
    results = fusion_head.predict(cls_logits, masks, list(data_samples), rescale=True)
    return MaskFormer.add_pred_to_datasample(None, list(data_samples), results)


def build_fusion_head(model_cfg) -> torch.nn.Module:
    """The ``panoptic_fusion_head`` of an mmdet MaskFormer/Mask2Former config, built as the detector builds it
    (its ``test_cfg`` merged in). It has no weights, so no checkpoint is needed."""
    from mmdet.registry import MODELS
    head = model_cfg['panoptic_fusion_head'].deepcopy() if hasattr(model_cfg['panoptic_fusion_head'], 'deepcopy') \
        else dict(model_cfg['panoptic_fusion_head'])
    head.update(test_cfg=model_cfg.get('test_cfg'))
    module = MODELS.build(head)
    if any(True for _ in module.parameters()):
        raise ValueError(f'{type(module).__name__} has weights; the ONNX path expects a parameter-free fusion head')
    return module.eval()
