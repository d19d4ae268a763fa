"""Profile vision foundation model encoders with the label-free SC/EF metrics and pick a fusion pair.

For every encoder, the images are resized to --size, normalised with the ImageNet statistics and fed to the
backbone; each multi-stride output is scored against the raw image with Structural Coherence (SC) and Edge
Fidelity (EF), averaged over the images. The result is the SPEC §4 table (encoders x strides) and the recommended
master (highest mean SC), auxiliary (highest mean EF among the others) and injection stride s* (argmax of the
auxiliary's EF).

Encoders (--encoder NAME=SPEC, repeatable; NAME labels the encoder in the outputs):
  NAME=path/config.py              the config's ``backbone`` dict (else ``model.backbone``)
  NAME=path/config.py:dotted.key   the dict at that key, e.g. configs/x.py:model.backbone.master
  NAME=REGISTERED_TYPE             a backbone type of the model registry, e.g. mmfusion.DINOv3ViT or
                                   mmfusion.SAM2Hiera; set its arguments with --cfg-options
Per-encoder overrides: --cfg-options NAME.key=value [NAME.key=value ...], e.g.
  --cfg-options dino.checkpoint=checkpoints/dinov3-vitb16 sam.checkpoint=checkpoints/sam2.1_hiera_base_plus.pt
A backbone returns a tuple of (B, C, H, W) maps ordered by stride and says which strides in ``out_strides``
((4, 8, 16, 32) assumed otherwise). Modules of your own register with --custom-imports my_pkg.my_backbone.

Outputs in --out-dir: profile.json (read by MetricGuidedNeck(inject_stride='auto') and the SC/EF hook),
profile.csv (one row per encoder x stride, every metric), profile.png (SC and EF against stride) and
pca/{encoder}_os{stride}_img{i}.png (first three principal components of each map of the first --num-vis images,
with pca/img{i}.png the input). With --emit-config PATH --base-config CFG it also writes a fused-model config that
inherits CFG and sets model.neck.inject_stride = s* (and, where CFG has them, the auxiliary strides of the backbone
and neck and the neck's aux_channels at s*).

Examples:
  python tools/analysis/profile_vfm.py --images data/cityscapes/leftImg8bit/val/frankfurt --num-images 50 \\
      --encoder dinov3=mmfusion.DINOv3ViT --encoder sam2=mmfusion.SAM2Hiera \\
      --cfg-options dinov3.checkpoint=checkpoints/dinov3-vitb16-pretrain-lvd1689m \\
                    sam2.checkpoint=checkpoints/sam2.1_hiera_base_plus.pt \\
      --size 512 1024 --device cuda --out-dir work_dirs/profile \\
      --emit-config configs/my_fused.py --base-config configs/mask2former_d3s2_cityscapes.py
  python tools/analysis/profile_vfm.py --dataset-config configs/_base_/datasets/cityscapes_instance.py \\
      --split val --num-images 20 --encoder a=configs/a.py --encoder b=configs/b.py
"""
from __future__ import annotations

import argparse
import importlib
import os
import os.path as osp
import sys

import torch


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        prog='profile_vfm.py', description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--encoder', action='append', required=True, metavar='NAME=SPEC',
                        help='encoder to profile (repeatable); SPEC is a config file[:key] or a registered type')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, metavar='NAME.KEY=VALUE',
                        help='per-encoder config overrides, keyed by the encoder NAME')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--images', metavar='FOLDER', help='folder of .png/.jpg images (sorted by name)')
    src.add_argument('--dataset-config', metavar='CFG', help='config whose {split}_dataloader.dataset lists images')
    parser.add_argument('--split', default='val', help='dataset split with --dataset-config (default: val)')
    parser.add_argument('--num-images', type=int, default=16, help='number of images N (default: 16)')
    parser.add_argument('--size', type=int, nargs=2, default=(512, 1024), metavar=('H', 'W'),
                        help='resize every image to H W (default: 512 1024; a multiple of 32 suits both encoders)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass (default: 1)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='device of the encoders and metrics (default: cuda if available)')
    parser.add_argument('--preset', default='profiling', choices=['profiling', 'selection'],
                        help='EF configuration (default: profiling, the published one)')
    parser.add_argument('--num-vis', type=int, default=2, help='images with PCA pictures (default: 2; 0: none)')
    parser.add_argument('--out-dir', default='work_dirs/profile_vfm', help='output folder')
    parser.add_argument('--emit-config', metavar='PATH', help='write a fused-model config here')
    parser.add_argument('--base-config', metavar='CFG', help='config the emitted one inherits (with --emit-config)')
    parser.add_argument('--custom-imports', nargs='+', default=[], metavar='MODULE',
                        help='modules to import first (to register your own backbones)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--seed', type=int, default=0, help='seed of randomly initialised weights (default: 0)')
    args = parser.parse_args(argv)
    if args.emit_config and not args.base_config:
        parser.error('--emit-config needs --base-config CFG (the fused-model config to inherit)')
    if args.num_images < 1 or args.batch_size < 1:
        parser.error('--num-images and --batch-size must be at least 1')
    return args


def parse_encoders(values, cfg_options) -> dict[str, tuple[str, dict]]:
    """{name: (spec, overrides)} from the --encoder and --cfg-options values."""
    from mmfusion.apis.profiling import ProfileError

    encoders = {}
    for value in values:
        name, sep, spec = value.partition('=')
        if not sep or not name or not spec:
            raise ProfileError(f'--encoder {value!r} is not NAME=SPEC (e.g. dinov3=mmfusion.DINOv3ViT)')
        if name in encoders:
            raise ProfileError(f'encoder name {name!r} given twice; use distinct names')
        encoders[name] = (spec, {})
    for key, val in (cfg_options or {}).items():
        name, _, rest = key.partition('.')
        if name not in encoders or not rest:
            raise ProfileError(f'--cfg-options {key}: start each key with an encoder name ({", ".join(encoders)})')
        encoders[name][1][rest] = val
    return encoders


def emit_config(path: str, base: str, selection: dict, profiles: dict, channels: dict, profile_json: str) -> None:
    """Write a config inheriting ``base`` that injects the auxiliary at s*.

    Sets ``model.neck.inject_stride = s*`` and, where the base config has them, the auxiliary strides of the
    backbone container and the neck (``aux_strides = (s*,)``) and the neck's ``aux_channels`` (the auxiliary's
    channel count at s*, as profiled), so the fused model stays consistent. Master and auxiliary are named in a
    comment: the base config decides which encoders they are.
    """
    from mmengine.config import Config

    from mmfusion.apis.profiling import ProfileError

    if not osp.isfile(base):
        raise ProfileError(f'base config not found: {base}; pass an existing file to --base-config')
    master, aux, stride = selection['master'], selection['auxiliary'], selection['inject_stride']
    try:
        model = Config.fromfile(base).get('model', {})
    except Exception as e:
        raise ProfileError(f'cannot read --base-config {base} ({type(e).__name__}: {e})') from None
    backbone, neck = model.get('backbone') or {}, model.get('neck') or {}
    neck_items = [f'inject_stride={stride}']
    if 'aux_strides' in neck:
        neck_items.append(f'aux_strides=({stride}, )')
    if 'aux_channels' in neck and stride in channels.get(aux, {}):
        neck_items.append(f'aux_channels=({channels[aux][stride]}, )')
    model_items = []
    if 'aux_strides' in backbone:
        model_items.append(f'backbone=dict(aux_strides=({stride}, ))')
    model_items.append(f'neck=dict({", ".join(neck_items)})')
    mean_sc = sum(v['SC'] for v in profiles[master].values()) / len(profiles[master])
    mean_ef = sum(v['EF'] for v in profiles[aux].values()) / len(profiles[aux])
    rel = osp.relpath(osp.abspath(base), osp.dirname(osp.abspath(path)))
    text = (f'# Generated by tools/analysis/profile_vfm.py from {profile_json}\n'
            f'# master: {master} (highest mean SC, {mean_sc:.3f}); auxiliary: {aux} (highest mean EF of the others, '
            f'{mean_ef:.2f}); s* = OS{stride} (EF_aux {profiles[aux][stride]["EF"]:.2f}).\n'
            f'# The base config must use {master} as master and {aux} as auxiliary.\n'
            f"_base_ = ['{rel}']\n\n"
            f'model = dict({", ".join(model_items)})\n')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from mmfusion.apis import profiling as P
    from mmfusion.metrics import ProfileAccumulator, save_profile, save_profile_csv, select_pair

    if args.threads:
        torch.set_num_threads(args.threads)
    for module in args.custom_imports:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise P.ProfileError(f'cannot import {module} ({e}); fix --custom-imports') from None
    encoders = parse_encoders(args.encoder, args.cfg_options)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise P.ProfileError('--device cuda but CUDA is not available; pass --device cpu')

    if args.images:
        paths = P.list_images(args.images, args.num_images)
    else:
        paths = P.dataset_image_paths(args.dataset_config, args.split, args.num_images)
    if any(v % 32 for v in args.size):
        print(f'note: --size {args.size[0]} {args.size[1]} is not a multiple of 32; encoders that pad their input '
              'return maps a little larger than the image', file=sys.stderr)
    images = [P.load_image(p, args.size) for p in paths]  # read all first: a bad file stops before any model runs
    configs = {name: P.encoder_config(spec, overrides) for name, (spec, overrides) in encoders.items()}

    vis_dir = osp.join(args.out_dir, 'pca')
    for i in range(min(args.num_vis, len(images))):
        P.save_png(osp.join(vis_dir, f'img{i}.png'), images[i].permute(1, 2, 0).numpy())

    profiles, channels = {}, {}
    for name, cfg in configs.items():
        torch.manual_seed(args.seed)
        model = P.build_encoder(name, cfg).to(device)
        strides = P.encoder_strides(model)
        acc = ProfileAccumulator(strides, preset=args.preset)
        for start in tqdm(range(0, len(images), args.batch_size), desc=name, unit='batch', file=sys.stderr):
            batch = torch.stack(images[start:start + args.batch_size]).to(device)
            feats = P.extract_features(model, batch, strides)
            if start == 0:
                P.check_map_sizes(name, feats, strides, args.size)  # before any metric scores a map as 0
            channels[name] = {s: int(f.shape[1]) for s, f in zip(strides, feats)}
            acc.update(feats, batch)
            for j in range(batch.shape[0]):
                if start + j >= args.num_vis:
                    break
                for stride, feat in zip(strides, feats):
                    P.save_png(osp.join(vis_dir, f'{name}_os{stride}_img{start + j}.png'),
                               P.pca_rgb(feat[j], size=tuple(args.size)))
        profiles[name] = acc.compute()
        del model

    selection = select_pair(profiles) if len(profiles) >= 2 else None
    meta = dict(images=paths, num_images=len(paths), size=list(args.size), device=str(device), preset=args.preset,
                encoders={n: cfg for n, cfg in configs.items()}, channels=channels)
    json_path = osp.join(args.out_dir, 'profile.json')
    save_profile(json_path, profiles, selection, _jsonable(meta))
    save_profile_csv(osp.join(args.out_dir, 'profile.csv'), profiles)
    P.plot_profiles(profiles, osp.join(args.out_dir, 'profile.png'))

    print(P.format_profile_table(profiles))
    if selection:
        print(f"recommended: master = {selection['master']} (highest mean SC), auxiliary = "
              f"{selection['auxiliary']} (highest mean EF of the others), s* = OS{selection['inject_stride']}")
    else:
        print('recommended: profile at least two encoders to choose a master and an auxiliary')
    if args.emit_config:
        if selection is None:
            raise P.ProfileError('--emit-config needs at least two encoders; add another --encoder')
        emit_config(args.emit_config, args.base_config, selection, profiles, channels, json_path)
        print(f'wrote {args.emit_config}')
    print(f'wrote {json_path}, profile.csv, profile.png and pca/ in {args.out_dir}')
    return dict(profiles=profiles, selection=selection)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def main(argv=None) -> dict:
    """Entry point; bad input exits with a one-line ``profile_vfm.py: error: ...`` message (status 2)."""
    args = parse_args(argv)
    from mmfusion.apis.profiling import ProfileError
    try:
        return run(args)
    except ProfileError as e:
        print(f'profile_vfm.py: error: {e}', file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == '__main__':
    main()
