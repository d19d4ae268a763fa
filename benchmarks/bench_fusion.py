"""Cost of the fusion: a fused model (DINOv3 ViT-B/16 master + frozen SAM2 Hiera-B+ auxiliary up to OS16 +
MetricGuidedNeck) against the master-only model, on the same input.

Peak memory: each case (model x {train, infer}) builds its model and runs one step in a fresh subprocess, so its
peak resident memory (``ru_maxrss``) is its own. Those subprocesses run with ``MALLOC_MMAP_THRESHOLD_=131072``, so
glibc returns freed blocks to the system and the peak RSS follows the live tensors (repeat runs agree within 1 MiB;
with glibc's default, freed memory it keeps cached made repeats differ by up to 3 %). ``--memory-only`` stops there.
Time: both models are built in one subprocess and their steps alternate (master, fused, master, fused, ...), so a
change in the load of a shared machine hits both alike; the figure is the minimum over ``--repeat`` runs after one
warm-up. A training step is forward + backward + AdamW step over the trainable parameters; inference is a forward
under ``torch.no_grad()`` in eval mode. Weights are random (the cost does not depend on them, apart from
Mask2Former's instance post-processing).

The head is mmdet's ``Mask2Former`` (MSDeformAttn pixel decoder, 9-layer decoder, 100 queries, 12544 points) when
mmdet and ``mmcv.ops`` import, else a small FPN-style semantic head (``--head simple``); the output says which.

``--aux-dtype bfloat16`` keeps the fused model's frozen auxiliary's weights in bfloat16
(``model.backbone.aux_dtype``), and ``--aux-compute-dtype float32`` computes its forward in float32 from them
(``model.backbone.aux_compute_dtype``; for CPUs without fast bf16); ``--aux-dtype qint8`` stores its Linear layers'
weights in int8 and runs them with PyTorch's dynamic int8 kernel (CPU). The master-only model is unchanged.

``--with-cp`` adds a third model beside them: the fused model with activation checkpointing of the master's blocks
(``model.backbone.master.with_cp=True``), trained only (checkpointing does nothing without gradients); its peak
memory and time are compared with the fused model's.

Usage::

    python benchmarks/bench_fusion.py                      # 1x3x256x512, CPU
    python benchmarks/bench_fusion.py --size 512 1024 --device cuda --repeat 5
    python benchmarks/bench_fusion.py --with-cp --head simple --repeat 1
    python benchmarks/bench_fusion.py --aux-dtype bfloat16 --aux-compute-dtype float32
    python benchmarks/bench_fusion.py --aux-dtype qint8 --repeat 5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing
NUM_CLASSES = 8  # Cityscapes instance classes

MASTER = dict(type='mmfusion.DINOv3ViT', arch='vitb16', pyramid='paper', checkpoint=None, frozen=False)
AUXILIARY = dict(type='mmfusion.SAM2Hiera', arch='base_plus', checkpoint=None)
MASTER_CHANNELS = (128, 256, 512, 1024)  # the paper pyramid: 128 * s / 4


# Model kinds: the master alone, the fused model, and the fused model with the master's blocks checkpointed.
KINDS = ('master', 'fused', 'fused_cp')
# Options of the fused backbone (MasterAuxBackbone keyword arguments), set from the command line.
FUSED_OPTIONS = {}


def _backbone_and_neck(fused: bool, with_cp: bool = False):
    master = dict(MASTER, with_cp=with_cp)
    if not fused:
        return master, None
    backbone = dict(type='mmfusion.MasterAuxBackbone', master=master, auxiliary=AUXILIARY, inject_stride=16,
                    **FUSED_OPTIONS)
    return backbone, dict(type='mmfusion.MetricGuidedNeck')


def _mask2former(fused: bool, with_cp: bool = False):
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope

    import mmfusion.models  # noqa: F401
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    backbone, neck = _backbone_and_neck(fused, with_cp)
    attn = dict(embed_dims=256, num_heads=8, dropout=0.0, batch_first=True)
    ffn = dict(embed_dims=256, num_fcs=2, ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))
    cfg = dict(
        type='Mask2Former',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32, pad_mask=True,
                               mask_pad_value=0, pad_seg=False),
        backbone=backbone,
        neck=neck,
        panoptic_head=dict(
            type='Mask2FormerHead', in_channels=list(MASTER_CHANNELS), strides=[4, 8, 16, 32], feat_channels=256,
            out_channels=256, num_things_classes=NUM_CLASSES, num_stuff_classes=0, num_queries=100,
            num_transformer_feat_level=3,
            pixel_decoder=dict(
                type='MSDeformAttnPixelDecoder', num_outs=3, norm_cfg=dict(type='GN', num_groups=32),
                act_cfg=dict(type='ReLU'),
                encoder=dict(num_layers=6, layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=256, num_heads=8, num_levels=3, num_points=4, dropout=0.0,
                                       batch_first=True),
                    ffn_cfg=dict(ffn, feedforward_channels=1024))),
                positional_encoding=dict(num_feats=128, normalize=True)),
            enforce_decoder_input_project=False,
            positional_encoding=dict(num_feats=128, normalize=True),
            transformer_decoder=dict(return_intermediate=True, num_layers=9, layer_cfg=dict(
                self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=dict(ffn, feedforward_channels=2048))),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0, reduction='mean',
                          class_weight=[1.0] * NUM_CLASSES + [0.1]),
            loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
            loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean', naive_dice=True,
                           eps=1.0, loss_weight=5.0)),
        panoptic_fusion_head=dict(type='MaskFormerFusionHead', num_things_classes=NUM_CLASSES, num_stuff_classes=0,
                                  loss_panoptic=None),
        train_cfg=dict(
            num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75,
            assigner=dict(type='HungarianAssigner', match_costs=[
                dict(type='ClassificationCost', weight=2.0),
                dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0)]),
            sampler=dict(type='MaskPseudoSampler')),
        test_cfg=dict(panoptic_on=False, semantic_on=False, instance_on=True, max_per_image=100, iou_thr=0.8,
                      filter_low_score=True))
    return MODELS.build(ConfigDict(cfg))  # mmdet deep-copies sub-configs with ConfigDict methods


def _mask2former_batch(size, device):
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    h, w = size
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    masks, boxes = [], []
    for i in range(4):  # four rectangles as instances
        y0, x0 = int(h * 0.1 * (i + 1)), int(w * 0.15 * (i + 1))
        m = torch.zeros(h, w, dtype=torch.uint8)
        m[y0:y0 + h // 5, x0:x0 + w // 6] = 1
        masks.append(m.numpy())
        boxes.append([x0, y0, x0 + w // 6, y0 + h // 5])
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1., 1.),
                                         batch_input_shape=(h, w)))
    import numpy as np
    sample.gt_instances = InstanceData(labels=torch.tensor([0, 1, 2, 3]), bboxes=torch.tensor(boxes).float(),
                                       masks=BitmapMasks(np.stack(masks), h, w))
    return dict(inputs=[image], data_samples=[sample])


class _SimpleSegmentor:
    """Backbone (+ neck) + a small FPN-style semantic head with a cross-entropy loss."""

    def __init__(self, fused: bool, with_cp: bool = False):
        import torch.nn as nn

        import mmfusion.models  # noqa: F401
        from mmfusion.registry import MODELS
        backbone, neck = _backbone_and_neck(fused, with_cp)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.lateral = nn.ModuleList(nn.Conv2d(c, 128, 1) for c in MASTER_CHANNELS)
        self.fuse = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.GroupNorm(32, 128), nn.ReLU(),
                                  nn.Conv2d(128, NUM_CLASSES, 1))
        self.module = nn.ModuleDict(dict(backbone=self.backbone, lateral=self.lateral, fuse=self.fuse))
        if self.neck is not None:
            self.module['neck'] = self.neck

    def logits(self, x):
        import torch.nn.functional as F
        feats = self.backbone(x)
        feats = self.neck(feats) if self.neck is not None else feats
        size = feats[0].shape[-2:]
        y = sum(F.interpolate(lat(f), size=size, mode='bilinear', align_corners=False)
                for lat, f in zip(self.lateral, feats))
        return F.interpolate(self.fuse(y), size=x.shape[-2:], mode='bilinear', align_corners=False)


def build_case(model_kind: str, head: str, size, device: str):
    """The model's module, its AdamW optimizer, and closures for one training step and one inference."""
    import torch
    torch.manual_seed(0)
    if model_kind not in KINDS:
        raise ValueError(f'model kind must be one of {KINDS}, got {model_kind!r}')
    fused, with_cp = model_kind != 'master', model_kind == 'fused_cp'
    if head == 'mask2former':
        model = _mask2former(fused, with_cp).to(device)
        module = model
        batch = _mask2former_batch(size, device)

        def train_step():
            data = model.data_preprocessor(batch, training=True)
            loss, _ = model.parse_losses(model(**data, mode='loss'))
            loss.backward()

        def infer():
            data = model.data_preprocessor(batch, training=False)
            return model(**data, mode='predict')
    else:
        seg = _SimpleSegmentor(fused, with_cp)
        module = seg.module.to(device)
        x = torch.randn(1, 3, *size, device=device)
        target = torch.randint(0, NUM_CLASSES, (1, *size), device=device)

        def train_step():
            torch.nn.functional.cross_entropy(seg.logits(x), target).backward()

        def infer():
            return seg.logits(x)

    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)

    def sync():
        if device.startswith('cuda'):
            torch.cuda.synchronize()

    def run(mode: str) -> tuple:
        """One training step (forward, backward, AdamW step) or one inference; returns its wall-clock and CPU
        seconds (the process's CPU time, all threads: steadier than wall-clock when the host's cores are shared)."""
        if mode == 'train':
            module.train()
            optimizer.zero_grad(set_to_none=True)
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            train_step()
            optimizer.step()
        else:
            module.eval()
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                infer()
        sync()
        return time.perf_counter() - t0, time.process_time() - c0

    from mmfusion.models.backbones.int8_linear import FrozenInt8Linear

    # int8 Linear weights (aux_dtype='qint8') are packed, not parameters: counted beside them
    int8 = sum(m.numel() for m in module.modules() if isinstance(m, FrozenInt8Linear))
    info = dict(trainable_params=sum(p.numel() for p in params),
                all_params=sum(p.numel() for p in module.parameters()) + int8, int8_params=int8)
    return run, info


def memory_case(model_kind: str, mode: str, head: str, size, device: str) -> dict:
    """Build one model and run one step of ``mode``; the process's peak RSS is this case's peak memory."""
    import torch
    run, info = build_case(model_kind, head, size, device)
    run(mode)
    out = dict(info, rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if device.startswith('cuda'):
        out['cuda_peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
    return out


def timing_case(head: str, size, repeat: int, device: str, with_cp: bool = False) -> dict:
    """All models in one process, steps alternated (master, fused, master, ...) so that a change in the machine's
    load hits all alike; the minimum over ``repeat`` runs after one warm-up. ``with_cp`` adds the fused model with
    checkpointing (training steps only)."""
    runs = {kind: build_case(kind, head, size, device)[0] for kind in KINDS[:3 if with_cp else 2]}
    times = {(kind, mode): [] for kind in runs for mode in ('train', 'infer') if kind != 'fused_cp' or mode == 'train'}
    cpu = {key: [] for key in times}
    for mode in ('train', 'infer'):
        for i in range(repeat + 1):
            for kind, run in runs.items():
                if (kind, mode) not in times:
                    continue
                t, c = run(mode)
                if i:  # the first run of each is the warm-up
                    times[(kind, mode)].append(t)
                    cpu[(kind, mode)].append(c)
    out = {f'{kind}/{mode}': ts for (kind, mode), ts in times.items()}
    out.update({f'{kind}/{mode}/cpu': cs for (kind, mode), cs in cpu.items()})
    return out


def _head_available() -> bool:
    try:
        import mmcv.ops  # noqa: F401
        import mmdet  # noqa: F401
        return True
    except Exception:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, nargs=2, default=(256, 512), metavar=('H', 'W'))
    parser.add_argument('--head', choices=('auto', 'mask2former', 'simple'), default='auto')
    parser.add_argument('--repeat', type=int, default=2, help='timed runs after one warm-up')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    parser.add_argument('--with-cp', action='store_true',
                        help="also the fused model with the master's blocks checkpointed (training step only)")
    parser.add_argument('--aux-dtype', choices=('bfloat16', 'float16', 'qint8'), help="the fused model's aux_dtype")
    parser.add_argument('--aux-compute-dtype', choices=('float32', ), help="the fused model's aux_compute_dtype")
    parser.add_argument('--memory-only', action='store_true', help='peak memory only (no timing)')
    parser.add_argument('--case', nargs=2, metavar=('MODEL', 'MODE'), help=argparse.SUPPRESS)
    parser.add_argument('--timing', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    head = args.head if args.head != 'auto' else ('mask2former' if _head_available() else 'simple')
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    FUSED_OPTIONS.update({k: v for k, v in dict(aux_dtype=args.aux_dtype,
                                                aux_compute_dtype=args.aux_compute_dtype).items() if v})
    if args.case:
        print(json.dumps(memory_case(args.case[0], args.case[1], head, tuple(args.size), args.device)))
        return
    if args.timing:
        print(json.dumps(timing_case(head, tuple(args.size), args.repeat, args.device, args.with_cp)))
        return

    def sub(*extra):
        cmd = [sys.executable, os.path.abspath(__file__), *extra, '--head', head, '--size', *map(str, args.size),
               '--repeat', str(args.repeat), '--device', args.device]
        if args.threads:
            cmd += ['--threads', str(args.threads)]
        for key, value in FUSED_OPTIONS.items():
            cmd += ['--' + key.replace('_', '-'), value]
        if args.with_cp and '--timing' in extra:
            cmd.append('--with-cp')
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072') if '--case' in extra else None
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if proc.returncode:
            sys.exit(f'{" ".join(extra)} failed:\n{proc.stderr[-4000:]}')
        return json.loads(proc.stdout.strip().splitlines()[-1])

    cases = [(kind, mode) for kind in ('master', 'fused') for mode in ('train', 'infer')]
    memory = {(kind, mode): sub('--case', kind, mode) for kind, mode in cases + [('fused_cp', 'train')] * args.with_cp}
    if args.memory_only:
        for (kind, mode), mem in memory.items():
            print(f'{kind:>8} {mode:<5}: peak RSS {mem["rss_mib"]:.1f} MiB')
        ratio = {mode: memory[('fused', mode)]['rss_mib'] / memory[('master', mode)]['rss_mib']
                 for mode in ('train', 'infer')}
        print(f'fused options {FUSED_OPTIONS or "none"}; fused/master peak RSS: train {ratio["train"]:.3f}x, '
              f'infer {ratio["infer"]:.3f}x; target train <= 1.05x ({"met" if ratio["train"] <= 1.05 else "NOT met"})')
        return
    times = sub('--timing')
    for (kind, mode), mem in memory.items():
        ts = times[f'{kind}/{mode}']
        cuda = f', CUDA peak {mem["cuda_peak_mib"]:.0f} MiB' if 'cuda_peak_mib' in mem else ''
        cs = times[f'{kind}/{mode}/cpu']
        int8 = f', {mem["int8_params"] / 1e6:.1f} M int8' if mem.get('int8_params') else ''
        print(f'{kind:>8} {mode:<5}: {min(ts):.3f} s (runs {", ".join(f"{t:.3f}" for t in ts)}), CPU time '
              f'{min(cs):.3f} s, peak RSS '
              f'{mem["rss_mib"]:.0f} MiB{cuda}, params {mem["all_params"] / 1e6:.1f} M '
              f'({mem["trainable_params"] / 1e6:.1f} M trainable{int8})')

    import torch
    print(f'\nhead: {head}; input 1x3x{args.size[0]}x{args.size[1]}; device {args.device}; '
          f'torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads; fused options '
          f'{FUSED_OPTIONS or "none"}')
    ratios = {}
    for mode in ('train', 'infer'):
        m, f = memory[('master', mode)], memory[('fused', mode)]
        t = min(times[f'fused/{mode}']) / min(times[f'master/{mode}'])
        c = min(times[f'fused/{mode}/cpu']) / min(times[f'master/{mode}/cpu'])
        ratios[mode] = (t, f['rss_mib'] / m['rss_mib'])
        # Each fused run follows a master run: their ratio is the figure least affected by slow load changes.
        paired = sorted(b / a for a, b in zip(times[f'master/{mode}'], times[f'fused/{mode}']))
        line = (f'{mode:<5} fused/master: time {t:.3f}x (median of paired runs {paired[len(paired) // 2]:.3f}x, '
                f'CPU time {c:.3f}x), peak RSS {ratios[mode][1]:.3f}x')
        if 'cuda_peak_mib' in m:
            line += f', CUDA peak {f["cuda_peak_mib"] / m["cuda_peak_mib"]:.3f}x'
        print(line)
    (t, mem), (ti, _) = ratios['train'], ratios['infer']
    print(f'targets: train time <= 1.10x ({"met" if t <= 1.10 else "NOT met"}), '
          f'train peak memory <= 1.05x ({"met" if mem <= 1.05 else "NOT met"}), '
          f'inference time <= 1.30x ({"met" if ti <= 1.30 else "NOT met"})')
    if args.with_cp:
        f, c = memory[('fused', 'train')], memory[('fused_cp', 'train')]
        t = min(times['fused_cp/train']) / min(times['fused/train'])
        line = (f'train fused+cp/fused: peak RSS {c["rss_mib"] / f["rss_mib"]:.3f}x '
                f'({f["rss_mib"] - c["rss_mib"]:.0f} MiB less), time {t:.3f}x')
        if 'cuda_peak_mib' in f:
            line += (f', CUDA peak {c["cuda_peak_mib"] / f["cuda_peak_mib"]:.3f}x '
                     f'({f["cuda_peak_mib"] - c["cuda_peak_mib"]:.0f} MiB less)')
        print(line)


if __name__ == '__main__':
    main()
