"""Time a full SC + EF profile of one 512x1024 Cityscapes-sized crop: mmfusion vs an sklearn-based SCS.

The 8 maps are those of the two encoders of the paper at OS 4/8/16/32 (SAM2 Hiera-B+: 112/224/448/896 channels,
DINOv3 ViT-B "paper" pyramid: 128/256/512/1024 channels; 128x256 ... 16x32 pixels). They are synthetic but shaped
like VFM features: region embeddings of a random scene (soft at region borders), a smooth spatial component and
noise, on the same scene as the image. Both paths compute SFC and EF with mmfusion; they differ in SCS:

- mmfusion: ``metrics_per_image`` (SC and EF from one shared preparation of the map): torch PCA, batched greedy
  k-means++ with restarts, stratified silhouette;
- sklearn: SFC and EF from mmfusion, SCS the reference way on the very same sampled points: PCA +
  KMeans(n_init=10) + silhouette_score.

Prints per-map times, the total ratio and the SCS differences, and a last line
``total: mmfusion X ms, sklearn path Y ms, speed-up Z×, max |ΔSCS| W``. Both libraries get the same thread count
(``--threads``, default: all cores).

``--breakdown`` also times the stages of both paths (mmfusion: preparation + SFC, EF, PCA, k-means, silhouette;
sklearn: PCA, KMeans, silhouette_score) and prints the ceiling of the speed-up: the ratio the mmfusion path would
reach if its SCS cost nothing (both paths keep SFC and EF), and if its k-means alone cost nothing.

Usage::

    python benchmarks/bench_metrics.py [--threads 2] [--repeats 1] [--device cpu] [--breakdown]
"""
from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mmfusion.metrics import (  # noqa: E402
    edge_fidelity,
    metrics_per_image,
    structural_coherence,
    structured_feature_contrast,
)
from mmfusion.metrics.cluster import kmeans_multi, pca_axes, stratified_silhouettes  # noqa: E402
from mmfusion.metrics.common import prepare_features  # noqa: E402
from mmfusion.metrics.structure import centred, sample_points  # noqa: E402
from tests._sklearn_ref import scs_points, sklearn_clustering_score  # noqa: E402

SIZE = (512, 1024)
ENCODERS = {
    # name: (channels per stride, boundary softness in feature px, smooth weight, noise)
    'sam2_hiera_b+': ((112, 224, 448, 896), 0.5, 0.6, 0.8),
    'dinov3_vitb16': ((128, 256, 512, 1024), 1.5, 0.3, 0.3),
}
STRIDES = (4, 8, 16, 32)


def synthetic_scene(seed: int = 0, regions: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """A random Voronoi scene: uint8 image (1, 3, H, W) and region labels (H, W)."""
    g = torch.Generator().manual_seed(seed)
    h, w = SIZE
    seeds = torch.rand(regions, 2, generator=g) * torch.tensor([h, w])
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    pix = torch.stack([yy, xx], -1).reshape(-1, 2).float()
    labels = torch.cdist(pix, seeds).argmin(1).reshape(h, w)
    colours = torch.rand(regions, 3, generator=g)
    shade = F.interpolate(torch.rand(1, 1, 8, 16, generator=g), size=SIZE, mode='bilinear', align_corners=False)[0, 0]
    img = colours[labels].permute(2, 0, 1) * (0.6 + 0.4 * shade) + 0.03 * torch.randn(3, h, w, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)[None], labels


def synthetic_features(labels: torch.Tensor, channels, softness, smooth, noise, seed) -> list[torch.Tensor]:
    """Feature maps (1, C, H/s, W/s) of one encoder on the scene."""
    g = torch.Generator().manual_seed(seed)
    regions = int(labels.max()) + 1
    onehot = F.one_hot(labels, regions).permute(2, 0, 1)[None].float()
    feats = []
    for stride, c in zip(STRIDES, channels):
        h, w = SIZE[0] // stride, SIZE[1] // stride
        soft = F.adaptive_avg_pool2d(onehot, (h, w))
        if softness > 0:
            k = 2 * math.ceil(2 * softness) + 1
            ax = torch.arange(k) - k // 2
            ker = torch.exp(-ax.float()**2 / (2 * softness**2))
            ker = (ker[:, None] * ker[None, :]) / ker.sum()**2
            soft = F.conv2d(F.pad(soft, (k // 2, ) * 4, mode='replicate'), ker.expand(regions, 1, k, k),
                            groups=regions)
        emb = torch.randn(regions, c, generator=g)
        low = torch.randn(1, c, max(1, h // 8), max(1, w // 8), generator=g)
        field = F.interpolate(low, size=(h, w), mode='bilinear', align_corners=False)
        feat = torch.einsum('brhw,rc->bchw', soft, emb) + smooth * field + noise * torch.randn(1, c, h, w, generator=g)
        feats.append(feat)
    return feats


def timed(fn, repeats: int):
    """Best wall-clock time, the CPU time of that run (all threads of this process) and the result."""
    best, cpu, out = math.inf, math.inf, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu, out


def stage_times(feat: torch.Tensor, image: torch.Tensor, repeats: int, threads: int) -> dict[str, float]:
    """Seconds per stage of both paths on one map (CPU), with the defaults of ``structural_coherence``."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    opt = {k: p.default for k, p in inspect.signature(structural_coherence).parameters.items() if k != 'feat'}
    ks = opt['ks']
    out = {}
    out['prep+SFC'], _, prep = timed(lambda: _prepared(feat), repeats)
    out['EF'], _, _ = timed(lambda: edge_fidelity(prep, image), repeats)

    def pca():
        gen = torch.Generator().manual_seed(opt['seed'])
        x, perm = sample_points(prep, opt['n_samples'], gen, raster=True)
        xc, _ = centred(x)
        z = xc @ pca_axes(xc, min(opt['pca_dim'], x.shape[2], x.shape[1] - 1))
        return (z if perm is None else z.index_select(1, perm)), gen

    out['PCA'], _, (z, gen) = timed(pca, repeats)
    out['k-means'], _, res = timed(
        lambda: kmeans_multi(z, ks, restarts=opt['restarts'], max_iter=opt['max_iter'], tol=opt['tol'],
                             generator=torch.Generator().manual_seed(opt['seed']), prune_after=opt['prune_after'],
                             prune_keep=opt['prune_keep']), repeats)
    keys = torch.rand(z.shape[1], generator=gen)
    out['silhouette'], _, _ = timed(
        lambda: stratified_silhouettes(z, [lab for lab, _ in res], ks, opt['n_silhouette'], keys), repeats)
    pts = scs_points(feat, opt['n_samples'], opt['seed'])[0].numpy()
    dim = min(opt['pca_dim'], pts.shape[1], pts.shape[0] - 1)
    with threadpool_limits(limits=threads):
        out['skl PCA'], _, zs = timed(lambda: PCA(n_components=dim, random_state=0).fit_transform(pts), repeats)
        out['skl KMeans'], _, labs = timed(
            lambda: [KMeans(n_clusters=k, n_init=opt['restarts'], random_state=0).fit_predict(zs) for k in ks],
            repeats)
        rng = torch.Generator().manual_seed(0)
        picks = [torch.randperm(len(zs), generator=rng)[:opt['n_silhouette']].numpy() for _ in ks]
        out['skl silhouette'], _, _ = timed(
            lambda: [silhouette_score(zs[i], lab[i]) for i, lab in zip(picks, labs)], repeats)
    return out


def _prepared(feat):
    prep = prepare_features(feat)
    structured_feature_contrast(prep)
    prep.channel_stats()
    return prep


def print_breakdown(maps, image, repeats: int, threads: int) -> None:
    """Per-stage times summed over the maps, and the speed-up ceilings they imply."""
    tot: dict[str, float] = {}
    for _, _, feat in maps:
        for key, val in stage_times(feat, image, repeats, threads).items():
            tot[key] = tot.get(key, 0.0) + val
    print('stage totals over the maps (ms): ' + ', '.join(f'{k} {v * 1e3:.0f}' for k, v in tot.items()))
    shared = tot['prep+SFC'] + tot['EF']
    ours = shared + tot['PCA'] + tot['k-means'] + tot['silhouette']
    ref = shared + tot['skl PCA'] + tot['skl KMeans'] + tot['skl silhouette']
    print(f'stage sums: mmfusion {ours * 1e3:.0f} ms, sklearn path {ref * 1e3:.0f} ms ({ref / ours:.1f}x); '
          f'ceiling with free k-means {ref / (ours - tot["k-means"]):.1f}x, with a free SCS {ref / shared:.1f}x')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='threads for torch and sklearn')
    parser.add_argument('--repeats', type=int, default=1, help='best of N timings per map')
    parser.add_argument('--device', default='cpu', help='device of the mmfusion path')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--breakdown', action='store_true', help='also time the stages of both paths (CPU only)')
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits
    torch.set_num_threads(args.threads)
    image, labels = synthetic_scene(args.seed)
    maps = []
    for i, (name, (channels, softness, smooth, noise)) in enumerate(ENCODERS.items()):
        for stride, feat in zip(STRIDES, synthetic_features(labels, channels, softness, smooth, noise, args.seed + i)):
            maps.append((name, stride, feat))

    dev = torch.device(args.device)
    image_dev = image.to(dev)
    # Warm-up (first-call allocations, lazy imports) on a small map.
    structural_coherence(maps[-1][2].to(dev))
    edge_fidelity(maps[-1][2].to(dev), image_dev)
    with threadpool_limits(limits=args.threads):
        sklearn_clustering_score(scs_points(maps[-1][2])[0].numpy())

    print(f'SC+EF of one {SIZE[0]}x{SIZE[1]} image, {len(maps)} maps, {args.threads} thread(s), '
          f'mmfusion on {args.device}; times in ms')
    head = f"{'encoder':<15}{'OS':>4}{'shape':>18}{'mmfusion':>10}{'sklearn':>10}{'ratio':>8}" \
           f"{'SCS ours':>10}{'SCS skl':>9}{'diff':>8}{'SC':>7}{'EF':>7}"
    print(head)
    print('-' * len(head))
    tot_ours = tot_ref = cpu_ours = cpu_ref = 0.0
    diffs = []
    for name, stride, feat in maps:
        f_dev = feat.to(dev)

        def ours(f_dev=f_dev):
            out = metrics_per_image(f_dev, image_dev)  # SC and EF sharing one preparation of the map
            if dev.type == 'cuda':
                torch.cuda.synchronize()
            return out, out

        def reference(feat=feat):
            with threadpool_limits(limits=args.threads):
                sfc = structured_feature_contrast(feat)
                scs = sklearn_clustering_score(scs_points(feat)[0].numpy())
                ef = edge_fidelity(feat, image)
            return float(sfc[0]), scs, ef

        t_ours, c_ours, (sc, ef) = timed(ours, args.repeats)
        t_ref, c_ref, (_, scs_ref, _) = timed(reference, args.repeats)
        tot_ours += t_ours
        tot_ref += t_ref
        cpu_ours += c_ours
        cpu_ref += c_ref
        scs_ours = float(sc['SCS'][0])
        diffs.append(abs(scs_ours - scs_ref))
        shape = 'x'.join(str(v) for v in feat.shape[1:])
        print(f'{name:<15}{stride:>4}{shape:>18}{t_ours * 1e3:>10.1f}{t_ref * 1e3:>10.1f}{t_ref / t_ours:>8.1f}'
              f'{scs_ours:>10.4f}{scs_ref:>9.4f}{scs_ours - scs_ref:>+8.4f}{float(sc["SC"][0]):>7.3f}'
              f'{float(ef["EF"][0]):>7.2f}')
    print('-' * len(head))
    print(f'total wall: mmfusion {tot_ours * 1e3:.0f} ms, sklearn-based {tot_ref * 1e3:.0f} ms, '
          f'speed-up {tot_ref / tot_ours:.1f}x (target >= 20x)')
    print(f'total CPU : mmfusion {cpu_ours * 1e3:.0f} ms, sklearn-based {cpu_ref * 1e3:.0f} ms, '
          f'speed-up {cpu_ref / cpu_ours:.1f}x (CPU time is steadier than wall time on a busy machine)')
    print(f'|SCS diff| max {max(diffs):.4f}, mean {sum(diffs) / len(diffs):.4f} (target <= 0.02)')
    if args.breakdown:
        print_breakdown(maps, image, args.repeats, args.threads)
    print(f'total: mmfusion {tot_ours * 1e3:.0f} ms, sklearn path {tot_ref * 1e3:.0f} ms, '
          f'speed-up {tot_ref / tot_ours:.1f}\u00d7, max |\u0394SCS| {max(diffs):.4f}')


if __name__ == '__main__':
    main()
