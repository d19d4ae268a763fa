"""Check the label-free SC/EF metrics: against ground truth, against their own hyper-parameters, and against
downstream results (the paper's Table 7 and its hyper-parameter sensitivity, on any labelled dataset).

1. SC vs SC_GT: per encoder and stride, the label-free Structural Coherence and its supervised counterpart SC_GT
   (ground-truth segments in place of grid cells and k-means clusters; needs --dataset-config), with Spearman's rho
   and Kendall's tau between the two rankings of all (encoder, stride).
2. Sensitivity: every hyper-parameter of --grid varied one at a time around its default; per variant the
   master/auxiliary/s* decision and the rank correlation of its SC and EF with the default profile.
3. With --results FILE (downstream score per injection stride, e.g. the stride ablation's AP), the correlation of
   EF_aux(s) with the gain over the master-only baseline (a row with stride none, or --baseline-score).

Ground truth (--gt): semantic = an mmseg dataset's seg_map_path, or Cityscapes gtFine *_labelTrainIds.png;
instance = Cityscapes gtFine *_instanceIds.png (one segment per object and per stuff class).

Grid (--grid NAME=V1,V2 ..., one-at-a-time; default: cell=4,16 pca_dim=8,16 ks=4+6+8,8+10+12 q=0.2,0.6
q_img=0.2,0.6 tau=0.3,0.7 size=<0.5x and 1.5x --size>): NAME is size (HxW) or any keyword of
mmfusion.metrics.structural_coherence / edge_fidelity (cell, grid, pca_dim, ks, n_samples, restarts, seed, q,
q_img, tau, d_in, d_out, rho_low, ...); tuples are written with '+'. --grid none skips the sensitivity study.

Results file: CSV with a header "stride,score" (rows 4,37.0 / OS16,39.1 / none,35.6) or JSON ({"16": 39.1,
"none": 35.6} or [{"stride": 16, "score": 39.1}, ...]).

Encoders (--encoder NAME=SPEC) and --cfg-options are those of tools/analysis/profile_vfm.py.

Outputs in --out-dir: validity.json, profile.json / profile.png (the default profile), sc_vs_sc_gt.png,
sensitivity.png, ef_vs_gain.png.

Examples:
  python tools/analysis/metric_validity.py --dataset-config configs/mask2former_d3s2_cityscapes.py --split val \\
      --num-images 50 --size 512 1024 --device cuda \\
      --encoder dinov3=configs/_base_/encoders.py:dinov3_vitb16 \\
      --encoder sam2=configs/_base_/encoders.py:sam2_hiera_bplus \\
      --results stride_ablation.csv --aux-encoder sam2 --out-dir work_dirs/metric_validity
  python tools/analysis/metric_validity.py --images my_images/ --grid cell=4,16 tau=0.3,0.7 \\
      --encoder a=configs/a.py --encoder b=configs/b.py
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _profile_tool():
    """tools/analysis/profile_vfm.py as a module (its --encoder/--cfg-options parsing is shared)."""
    spec = importlib.util.spec_from_file_location('profile_vfm', osp.join(osp.dirname(osp.abspath(__file__)),
                                                                          'profile_vfm.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='metric_validity.py', description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _profile_tool().add_encoder_args(parser)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--dataset-config', metavar='CFG',
                     help='config whose {split}_dataloader.dataset gives images and ground truth')
    src.add_argument('--images', metavar='FOLDER', help='folder of images, no ground truth (no SC_GT)')
    parser.add_argument('--split', default='val', help='dataset split with --dataset-config (default: val)')
    parser.add_argument('--gt', default='semantic', choices=['semantic', 'instance'],
                        help='ground-truth segments of SC_GT (default: semantic)')
    parser.add_argument('--ignore-index', type=int, default=255, help='void label of the label maps (default: 255)')
    parser.add_argument('--num-images', type=int, default=16, help='number of images N (default: 16)')
    parser.add_argument('--size', type=int, nargs=2, default=(512, 1024), metavar=('H', 'W'),
                        help='resize every image to H W (default: 512 1024)')
    parser.add_argument('--grid', nargs='+', metavar='NAME=V1,V2',
                        help='hyper-parameter grid, one at a time (default: see below); "none" skips it')
    parser.add_argument('--preset', default='profiling', choices=['profiling', 'selection'],
                        help='EF configuration (default: profiling, the published one)')
    parser.add_argument('--results', metavar='FILE', help='CSV/JSON of downstream score per injection stride')
    parser.add_argument('--score-key', default='score', help='score column of --results (default: score)')
    parser.add_argument('--baseline-score', type=float, help='master-only score (else the results row "none")')
    parser.add_argument('--aux-encoder', metavar='NAME',
                        help='encoder whose EF is compared with --results (default: the selected auxiliary)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass (default: 1)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='device of the encoders and metrics (default: cuda if available)')
    parser.add_argument('--out-dir', default='work_dirs/metric_validity', help='output folder')
    parser.add_argument('--threads', type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--seed', type=int, default=0, help='seed of randomly initialised weights (default: 0)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.batch_size < 1:
        parser.error('--num-images and --batch-size must be at least 1')
    if args.results is None and (args.baseline_score is not None or args.aux_encoder):
        parser.error('--baseline-score and --aux-encoder need --results FILE')
    return args


def _random_weights(cfg: dict) -> bool:
    """True when a backbone config names no checkpoint (nor an init_cfg), i.e. it runs on random weights."""
    from mmfusion.apis.profiling import CHECKPOINT_KEYS

    def named(node) -> bool:
        if not isinstance(node, dict):
            return False
        return any((k in CHECKPOINT_KEYS and v) or (k == 'init_cfg' and v) or named(v) for k, v in node.items())

    return not named(cfg)


def run(args: argparse.Namespace) -> dict:
    from mmfusion.apis import profiling as P
    from mmfusion.apis import validity as V
    from mmfusion.metrics import save_profile

    if args.threads:
        torch.set_num_threads(args.threads)
    tool = _profile_tool()
    tool.import_custom_modules(args.custom_imports)
    encoders = tool.parse_encoders(args.encoder, args.cfg_options)
    if args.aux_encoder and args.aux_encoder not in encoders:
        raise V.ValidityError(f'--aux-encoder {args.aux_encoder} is not one of the encoders ({", ".join(encoders)})')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise V.ValidityError('--device cuda but CUDA is not available; pass --device cpu')
    size = tuple(args.size)

    # Everything that can be checked without a model first: grid, results file, images, ground truth.
    if args.grid and [g.lower() for g in args.grid] == ['none']:
        items = []
    else:
        items = list(args.grid or V.DEFAULT_GRID)
        if not any(g.partition('=')[0].strip() == V.SIZE for g in items) and not args.grid:
            items.append(V.SIZE + '=' + ','.join(f'{h}x{w}' for h, w in V.default_size_values(size)))
    variants = V.make_variants(V.parse_grid(items, args.preset), size, args.preset)
    V.check_variants(variants, args.preset)
    results = V.load_results(args.results, args.score_key) if args.results else None

    if args.images:
        paths, segments = P.list_images(args.images, args.num_images), None
    else:
        infos = P.dataset_infos(args.dataset_config, args.split, args.num_images)
        paths = [info['img_path'] for info in infos]
        segments = [V.load_gt_segments(info, args.gt, size, args.ignore_index) for info in infos]
    configs = {name: P.encoder_config(spec, overrides) for name, (spec, overrides) in encoders.items()}
    random_init = [name for name, cfg in configs.items() if _random_weights(cfg)]
    if random_init:
        print(f'note: {", ".join(random_init)} name(s) no checkpoint: RANDOM WEIGHTS, the numbers say nothing about '
              'the pretrained encoders', file=sys.stderr)

    models = V.build_encoders(configs, device, args.seed)
    if results is not None:  # a results file the profile cannot match stops before the long part
        strides = {n: P.encoder_strides(m) for n, m in models.items()}
        known = set(strides[args.aux_encoder]) if args.aux_encoder else set().union(*strides.values())
        given = sorted(s for s in results if s is not None)
        if not set(given) <= known:
            raise V.ValidityError(f'the results strides {given} do not match the profiled strides {sorted(known)}'
                                  f'{" of " + args.aux_encoder if args.aux_encoder else ""}; give scores for '
                                  'profiled strides only')

    scored = V.score_dataset(models, paths, size, variants, segments, preset=args.preset,
                             batch_size=args.batch_size, progress=not args.no_progress)
    profiles = scored['profiles']
    selection, reason = V.decide(profiles)
    doc = dict(profiles=profiles, selection=selection, no_selection_reason=reason)
    if segments is not None:
        doc['sc_vs_sc_gt'] = V.sc_gt_agreement(profiles)
    if variants:
        doc['sensitivity'] = V.sensitivity(profiles, scored['variants'], variants)
        doc['variant_profiles'] = scored['variants']
    if results is not None:
        aux = args.aux_encoder or (doc['selection'] or {}).get('auxiliary')
        if aux is None:
            raise V.ValidityError('--results with one encoder: name it with --aux-encoder')
        doc['results'] = V.gain_correlation(profiles, aux, results, args.baseline_score)
    doc['meta'] = dict(images=paths, num_images=len(paths), size=list(size), split=args.split if segments else None,
                       dataset_config=args.dataset_config, gt=args.gt if segments else None, preset=args.preset,
                       device=str(device), seed=args.seed, grid=items, random_weights=random_init,
                       encoders=configs, channels=scored['channels'])

    json_path = osp.join(args.out_dir, 'validity.json')
    V.save_json(json_path, doc)
    if selection is not None:  # profile.json is read for its selection (MetricGuidedNeck's inject_stride='auto')
        save_profile(osp.join(args.out_dir, 'profile.json'), profiles, selection,
                     V.to_jsonable(dict(images=paths, size=list(size), preset=args.preset)))
    P.plot_profiles(profiles, osp.join(args.out_dir, 'profile.png'))
    plots = V.plot_report(doc, args.out_dir)

    print(P.format_profile_table(profiles))
    print('no pair chosen: ' + reason if selection is None else '')
    print(V.format_report(doc))
    written = ['profile.json'] * (selection is not None) + ['profile.png'] + [osp.basename(p) for p in plots]
    print(f'wrote {json_path}, {", ".join(written)} in {args.out_dir}')
    return doc


def main(argv=None) -> dict:
    """Entry point; bad input exits with a one-line ``metric_validity.py: error: ...`` message (status 2)."""
    args = parse_args(argv)
    from mmfusion.apis.profiling import ProfileError, tool_error
    try:
        return run(args)
    except ProfileError as e:
        print(f'metric_validity.py: error: {tool_error(e)}', file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == '__main__':
    main()
