"""Synthetic street scenes in the exact Cityscapes on-disk format: mmfusion's embedded default dataset.

Each scene is a list of labelled polygons painted back to front, exactly as Cityscapes' ground truth is made: the
``*_gtFine_polygons.json`` lists them in drawing order, and the label/instance pngs are the same rasterisation
(Pillow's polygon fill, which cityscapesscripts' ``json2labelImg`` / ``json2instanceImg`` use), so occlusion is
resolved by the order. Scenes have a horizon, sky, facades with windows, trees, terrain, sidewalks, a road with lane
markings, fences/walls, poles with traffic signs and lights (thin), parked and moving cars, trucks and buses that
touch and occlude each other, pedestrians alone and in touching groups, a pedestrian crowd region (``persongroup``,
``iscrowd=1``), bicycles and motorcycles drawn as thin frames with hollow wheels (some with riders), and sometimes
the ego vehicle's bonnet (void). Surfaces are textured (noise, stripes, tiles), so both edges and region structure
carry information. Classes that occur: road, sidewalk, building, wall, fence, pole, traffic light, traffic sign,
vegetation, terrain, sky, person, rider, car, truck, bus, motorcycle, bicycle (everything but train), plus void.

Layout written by :func:`generate_synthetic_cityscapes` under ``out_dir``::

    leftImg8bit/{split}/{city}/{city}_{seq:06d}_000019_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq:06d}_000019_gtFine_{polygons.json,labelIds,instanceIds,color,labelTrainIds}.png
    annotations/instancesonly_filtered_gtFine_{split}.json            (mmdet CityscapesDataset / CocoMetric)
    annotations/cityscapes_panoptic_{split}.json + cityscapes_panoptic_{split}/   (mmdet CocoPanopticDataset)

Cities: train ``alpha``/``bravo``, val ``charlie``/``delta`` (alternating). Deterministic: image ``i`` of a split
depends only on ``(seed, split, i)`` and the size, so the same arguments give byte-identical files.

Needs numpy, OpenCV, Pillow and cityscapesscripts' label table only (no mmcv/mmdet/mmseg).
"""
import json
import os
import os.path as osp
import shutil
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageDraw

from mmfusion.utils.errors import UserError
from mmfusion.utils.fileio import MARKER_PREFIX, is_owned, mark_dir

from .cityscapes_labels import ID_TO_COLOR, ID_TO_TRAINID, name2label
from .converters.cityscapes import convert_cityscapes_instances
from .converters.cityscapes_panoptic import convert_cityscapes_panoptic

__all__ = ['SceneSample', 'synthesize_scene', 'generate_synthetic_cityscapes', 'CITIES', 'FRAME']

CITIES = {'train': ('alpha', 'bravo'), 'val': ('charlie', 'delta')}
FRAME = 19  # Cityscapes annotates the 20th frame of each snippet
_SPLIT_SEED = {'train': 0, 'val': 1}
MARKER_KIND = 'synthetic-cityscapes'  # out_dir/.mmfusion-synthetic-cityscapes: this generator wrote the dataset

# Texture amplitudes per surface kind: (fine noise, blotchy noise, vertical bars, tile grid, vertical gradient).
_TEXTURES = {
    'flat': (0.03, 0.0, 0.0, 0.0, 0.0),
    'sky': (0.01, 0.04, 0.0, 0.0, -0.3),
    'building': (0.04, 0.12, 0.0, 0.0, 0.0),
    'vegetation': (0.18, 0.35, 0.0, 0.0, 0.0),
    'terrain': (0.10, 0.20, 0.0, 0.0, 0.0),
    'road': (0.08, 0.05, 0.0, 0.0, 0.0),
    'sidewalk': (0.05, 0.05, 0.0, 0.18, 0.0),
    'fence': (0.04, 0.0, 0.45, 0.0, 0.0),
    'wall': (0.05, 0.08, 0.0, 0.10, 0.0),
    'vehicle': (0.02, 0.03, 0.0, 0.0, -0.15),
    'human': (0.04, 0.05, 0.0, 0.0, 0.0),
}
_TEX_INDEX = {k: i for i, k in enumerate(_TEXTURES)}
# Detail shades painted over an object's own pixels: 1 glass, 2 tyre, 3 trousers, 4 skin, 5 lane marking, 6 lamp.
_GLASS, _TYRE, _TROUSERS, _SKIN, _MARKING, _LAMP = range(1, 7)
_CAR_COLORS = ((200, 200, 205), (30, 30, 35), (150, 20, 25), (20, 50, 120), (120, 125, 130), (230, 230, 225),
               (60, 90, 60), (180, 150, 40))
_FACADE_COLORS = ((150, 140, 130), (120, 110, 100), (170, 160, 150), (110, 100, 95), (140, 120, 100))

# Relative outlines (x in units of width about the centre, y in units of height upwards from the ground).
_PERSON = ((-0.30, 0.00), (-0.12, 0.00), (0.00, 0.40), (0.12, 0.00), (0.30, 0.00), (0.18, 0.48), (0.40, 0.50),
           (0.30, 0.80), (0.10, 0.84), (0.12, 0.93), (0.00, 1.00), (-0.12, 0.93), (-0.10, 0.84), (-0.30, 0.80),
           (-0.40, 0.50), (-0.18, 0.48))
_PERSON_LEGS = _PERSON[:6] + ((-0.18, 0.48), )
_PERSON_HEAD = _PERSON[8:13]
_CAR = ((-0.5, 0.0), (-0.5, 0.5), (-0.42, 0.58), (-0.25, 0.62), (-0.15, 1.0), (0.25, 1.0), (0.35, 0.62),
        (0.5, 0.55), (0.5, 0.0))
_CAR_WINDOW = ((-0.12, 0.9), (0.22, 0.9), (0.3, 0.64), (-0.2, 0.64))
_TRUCK = ((-0.5, 0.0), (-0.5, 1.0), (0.2, 1.0), (0.2, 0.65), (0.4, 0.62), (0.5, 0.4), (0.5, 0.0))
_TRUCK_WINDOW = ((0.24, 0.6), (0.38, 0.58), (0.46, 0.42), (0.24, 0.42))
_BUS = ((-0.5, 0.0), (-0.5, 0.9), (-0.47, 1.0), (0.47, 1.0), (0.5, 0.9), (0.5, 0.0))
# kind: (width, height) in units of the depth scale, outline, window (None: a row of windows), wheel x, colours.
_VEHICLES = {
    'car': (1.0, 0.45, _CAR, _CAR_WINDOW, (-0.3, 0.3), _CAR_COLORS),
    'truck': (1.6, 1.2, _TRUCK, _TRUCK_WINDOW, (-0.35, -0.15, 0.32), ((210, 210, 215), (40, 70, 140))),
    'bus': (2.2, 0.92, _BUS, None, (-0.32, 0.32), ((220, 180, 30), (170, 30, 30))),
}


class SceneSample(NamedTuple):
    """One synthetic scene: RGB image (H, W, 3) uint8, Cityscapes polygon annotation (dict), labelIds (H, W) uint8,
    instanceIds (H, W) int32 (Cityscapes encoding)."""
    image: np.ndarray
    polygons: dict
    label_ids: np.ndarray
    instance_ids: np.ndarray


class _Scene:
    """Collects labelled polygons (with appearance) in drawing order."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.rng, self.h, self.w = rng, height, width
        self.objects = []

    def add(self, label, points, color, tex='flat', details=()):
        self.objects.append(dict(label=label, polygon=self._clip(points), color=color, tex=tex,
                                 details=[(shade, self._clip(p)) for shade, p in details]))

    def _clip(self, points):
        return [[int(round(min(max(x, 0), self.w - 1))), int(round(min(max(y, 0), self.h - 1)))] for x, y in points]

    def jitter(self, color, amount=15):
        return np.clip(np.asarray(color, float) + self.rng.uniform(-amount, amount, 3), 0, 255)


def _place(shape, cx, yb, w, h, mirror=False):
    """Shape in relative units -> image points, centred at ``cx`` standing on ``yb``."""
    s = -1.0 if mirror else 1.0
    return [(cx + s * x * w, yb - y * h) for x, y in shape]


def _octagon(cx, cy, r, n=8):
    ang = np.arange(n) * 2 * np.pi / n
    return list(zip(cx + r * np.cos(ang), cy + r * np.sin(ang)))


def _thick_path(points, half_width):
    """Outline of a polyline widened by ``half_width`` on both sides (miters capped at 2x)."""
    p = np.asarray(points, float)
    seg = np.diff(p, axis=0)
    seg /= np.maximum(np.linalg.norm(seg, axis=1, keepdims=True), 1e-9)
    normals = np.stack([-seg[:, 1], seg[:, 0]], axis=1)
    vert = np.concatenate([normals[:1], normals[:-1] + normals[1:], normals[-1:]])
    vert /= np.maximum(np.linalg.norm(vert, axis=1, keepdims=True), 1e-9)
    cos = np.concatenate([[1.0], np.einsum('ij,ij->i', vert[1:-1], normals[1:]), [1.0]])
    offset = vert * (half_width / np.clip(cos, 0.5, 1.0))[:, None]
    return [tuple(q) for q in p + offset] + [tuple(q) for q in (p - offset)[::-1]]


def _cycle_path(x0, yb, radius, mirror):
    """Centre line of a two-wheeler: rear wheel (330 degree arc), frame, fork, front wheel (330 degree arc)."""
    r = radius
    rear, front = np.array([x0 + r, yb - r]), np.array([x0 + 3.6 * r, yb - r])

    def arc(centre, start_deg, sweep_deg):
        ang = np.deg2rad(start_deg + np.linspace(0, sweep_deg, 14))
        return [tuple(centre + r * np.array([np.cos(a), -np.sin(a)])) for a in ang]

    frame = [(x0 + 2.1 * r, yb - 0.9 * r), (x0 + 1.7 * r, yb - 2.6 * r), (x0 + 3.4 * r, yb - 2.9 * r)]
    path = arc(rear, 60, 330) + frame + arc(front, 110, -330)
    if mirror:
        path = [(2 * x0 + 4.6 * r - x, y) for x, y in path]
    return path


def _layout(rng: np.random.Generator, height: int, width: int) -> list:
    """The scene's polygons, back to front."""
    H, W = float(height), float(width)
    sc = _Scene(rng, height, width)
    yh = H * rng.uniform(0.36, 0.48)  # horizon
    vx = W * rng.uniform(0.4, 0.6)  # vanishing point
    ground = H - 1 - yh

    def y_at(u):  # u: 0 at the horizon, 1 at the bottom row
        return yh + u * ground

    # Sky and facades.
    sc.add('sky', [(0, 0), (W - 1, 0), (W - 1, yh), (0, yh)], sc.jitter((85, 140, 190), 20), 'sky')
    x = -rng.uniform(0, 0.1) * W
    while x < W:
        bw, top, bottom = rng.uniform(0.1, 0.28) * W, rng.uniform(0.04, 0.3) * H, yh + 0.02 * H
        if rng.random() < 0.3:
            gable = rng.uniform(0.04, 0.1) * H
            outline = [(x, bottom), (x, top + gable), (x + bw / 2, top), (x + bw, top + gable), (x + bw, bottom)]
        else:
            outline = [(x, bottom), (x, top), (x + bw, top), (x + bw, bottom)]
        windows, ww, wh = [], max(1.0, bw / 12), max(1.0, 0.03 * H)
        for wy in np.arange(top + 0.12 * H, bottom - 0.08 * H, 2.2 * wh)[:8]:
            for wx in np.arange(x + ww, x + bw - 1.5 * ww, 2 * ww):
                windows.append((_GLASS, [(wx, wy), (wx + ww, wy), (wx + ww, wy + wh), (wx, wy + wh)]))
        sc.add('building', outline, sc.jitter(_FACADE_COLORS[rng.integers(len(_FACADE_COLORS))]), 'building',
               windows)
        x += bw
    for _ in range(rng.integers(1, 4)):  # trees: trunk (vegetation, as in Cityscapes) and crown
        cx, cy, r = rng.uniform(0, W), yh - rng.uniform(0.05, 0.2) * H, rng.uniform(0.06, 0.13) * H
        tw = max(1.5, 0.08 * r)
        sc.add('vegetation', [(cx - tw, cy), (cx + tw, cy), (cx + tw, yh + 0.03 * H), (cx - tw, yh + 0.03 * H)],
               sc.jitter((70, 55, 40)), 'vegetation')
        ang = np.linspace(0, 2 * np.pi, 18, endpoint=False)
        rad = r * (1 + 0.25 * rng.uniform(-1, 1, ang.size))
        sc.add('vegetation', list(zip(cx + rad * np.cos(ang), cy + rad * np.sin(ang))), sc.jitter((80, 120, 40)),
               'vegetation')

    # Ground: terrain, sidewalks, road with lane markings.
    sc.add('terrain', [(0, yh), (W - 1, yh), (W - 1, H - 1), (0, H - 1)], sc.jitter((120, 150, 80)), 'terrain')
    a = rng.uniform(0.015, 0.04) * W
    xl, xr = rng.uniform(0, 0.2) * W, rng.uniform(0.8, 1.0) * (W - 1)
    y_out = {-1: y_at(rng.uniform(0.05, 0.3)), 1: y_at(rng.uniform(0.05, 0.3))}
    walk = sc.jitter((185, 175, 170))
    sc.add('sidewalk', [(0, y_out[-1]), (vx - a, yh), (xl, H - 1), (0, H - 1)], walk, 'sidewalk')
    sc.add('sidewalk', [(vx + a, yh), (W - 1, y_out[1]), (W - 1, H - 1), (xr, H - 1)], walk, 'sidewalk')
    xc, marks = (xl + xr) / 2, []
    for u0 in (0.04, 0.1, 0.2, 0.35, 0.55, 0.8):
        u1 = u0 * 1.3
        hw0, hw1 = max(0.6, 0.006 * W * u0), max(0.6, 0.006 * W * u1)
        x0, x1 = vx + u0 * (xc - vx), vx + u1 * (xc - vx)
        marks.append((_MARKING, [(x0 - hw0, y_at(u0)), (x0 + hw0, y_at(u0)), (x1 + hw1, y_at(u1)),
                                 (x1 - hw1, y_at(u1))]))
    sc.add('road', [(vx - a, yh), (vx + a, yh), (xr, H - 1), (xl, H - 1)], sc.jitter((90, 88, 92), 10), 'road',
           marks)

    def road_edge(u, side):
        return (vx - a + u * (xl - vx + a)) if side < 0 else (vx + a + u * (xr - vx - a))

    def outer_edge(u, side):  # outer border of the sidewalk at depth u
        y = y_at(u)
        frac = min(1.0, (y - yh) / max(y_out[side] - yh, 1e-6))
        return (vx - a) * (1 - frac) if side < 0 else (vx + a) + frac * (W - 1 - vx - a)

    def on_walk(u, side, t):
        return road_edge(u, side) + t * (outer_edge(u, side) - road_edge(u, side))

    if rng.random() < 0.7:  # a fence or a wall along one sidewalk's outer border
        side = rng.choice((-1, 1))
        u0 = rng.uniform(0.03, 0.2)
        u1 = u0 + rng.uniform(0.1, 0.3)
        pts = [(outer_edge(u, side), y_at(u)) for u in (u0, u1)]
        hgt = [0.35 * u * ground + 2 for u in (u0, u1)]
        label, tex = ('fence', 'fence') if rng.random() < 0.6 else ('wall', 'wall')
        sc.add(label, [pts[0], pts[1], (pts[1][0], pts[1][1] - hgt[1]), (pts[0][0], pts[0][1] - hgt[0])],
               sc.jitter((150, 130, 100) if label == 'fence' else (165, 155, 145)), tex)

    # Depth-sorted items: (ground y, [polygon args...]) painted far to near so that near objects occlude far ones.
    items = []

    for _ in range(rng.integers(1, 4)):  # poles carrying a sign or a traffic light
        side, u = rng.choice((-1, 1)), rng.uniform(0.15, 0.95)
        xb, yb = on_walk(u, side, rng.uniform(0.15, 0.5)), y_at(u)
        ph, pw = 2.6 * u * ground, max(0.5, 0.003 * W * u)
        top = yb - ph
        parts = [('pole', [(xb - pw, yb), (xb + pw, yb), (xb + pw, top), (xb - pw, top)], sc.jitter((125, 125, 130)),
                  'flat', ())]
        size = max(2.5, 0.06 * u * ground)
        if rng.random() < 0.6:
            cy = top + 1.5 * size
            shape = rng.integers(3)
            if shape == 0:
                sign = [(xb - size, cy + size), (xb + size, cy + size), (xb, cy - size)]
            elif shape == 1:
                sign = [(xb - size, cy - size), (xb + size, cy - size), (xb + size, cy + size), (xb - size, cy + size)]
            else:
                sign = _octagon(xb, cy, size)
            colors = ((200, 30, 30), (30, 60, 160), (220, 200, 30))
            parts.append(('traffic sign', sign, sc.jitter(colors[rng.integers(3)]), 'flat', ()))
        else:
            lw, lh = 0.6 * size, 1.8 * size
            lamp = (0.55 if rng.random() < 0.5 else -0.55) * lh * 0.6
            parts.append(('traffic light', [(xb - lw, top), (xb + lw, top), (xb + lw, top + 2 * lh),
                                            (xb - lw, top + 2 * lh)], sc.jitter((40, 40, 40), 5), 'flat',
                          [(_LAMP, _octagon(xb, top + lh + lamp, 0.6 * lw))]))
        items.append((yb, parts))

    def vehicle(u, cx, kind, mirror):
        width, height, outline, window, wheels, colors = _VEHICLES[kind]
        yb, size = y_at(u), 0.95 * u * ground * rng.uniform(0.9, 1.15)
        w, h = width * size, height * size
        if window is not None:
            details = [(_GLASS, _place(window, cx, yb, w, h, mirror))]
        else:  # a row of bus windows
            details = [(_GLASS, _place(((wx, 0.55), (wx + 0.1, 0.55), (wx + 0.1, 0.85), (wx, 0.85)), cx, yb, w, h,
                                       mirror)) for wx in np.linspace(-0.42, 0.34, 6)]
        r = min(0.1 * size, 0.45 * h)
        details += [(_TYRE, _octagon(cx + (-wx if mirror else wx) * w, yb - r, r)) for wx in wheels]
        color = colors[rng.integers(len(colors))]
        return (kind, _place(outline, cx, yb, w, h, mirror), sc.jitter(color), 'vehicle', details)

    for _ in range(rng.integers(2, 6)):  # cars, some with a touching/occluded neighbour just behind
        u = rng.uniform(0.12, 1.0)
        cx = road_edge(u, -1) + rng.uniform(0.1, 0.9) * (road_edge(u, 1) - road_edge(u, -1))
        mirror = bool(rng.random() < 0.5)
        items.append((y_at(u), [vehicle(u, cx, 'car', mirror)]))
        if rng.random() < 0.5:
            u2 = u * rng.uniform(0.85, 0.95)
            items.append((y_at(u2), [vehicle(u2, cx + rng.choice((-1, 1)) * 0.5 * u * ground, 'car', mirror)]))
    for kind, prob in (('truck', 0.4), ('bus', 0.35)):
        if rng.random() < prob:
            u = rng.uniform(0.15, 0.6)
            cx = road_edge(u, -1) + rng.uniform(0.2, 0.8) * (road_edge(u, 1) - road_edge(u, -1))
            items.append((y_at(u), [vehicle(u, cx, kind, bool(rng.random() < 0.5))]))

    def human(label, cx, yb, h):
        shirt = rng.integers(30, 230, 3)
        details = [(_TROUSERS, _place(_PERSON_LEGS, cx, yb, 0.3 * h, h)),
                   (_SKIN, _place(_PERSON_HEAD, cx, yb, 0.3 * h, h))]
        return (label, _place(_PERSON, cx, yb, 0.3 * h, h), sc.jitter(shirt, 5), 'human', details)

    for _ in range(rng.integers(2, 7)):  # pedestrians, some in touching pairs
        side, u = rng.choice((-1, 1)), rng.uniform(0.1, 1.0)
        cx, yb, h = on_walk(u, side, rng.uniform(0.1, 0.9)), y_at(u), 0.75 * u * ground * rng.uniform(0.85, 1.1)
        items.append((yb, [human('person', cx, yb, h)]))
        if rng.random() < 0.4:
            u2 = u * rng.uniform(0.93, 0.99)
            items.append((y_at(u2), [human('person', cx + rng.choice((-1, 1)) * rng.uniform(0.2, 0.35) * h, y_at(u2),
                                           h * u2 / u)]))
    if rng.random() < 0.35:  # a crowd that is annotated as one region
        side, u = rng.choice((-1, 1)), rng.uniform(0.12, 0.3)
        cx, yb, h = on_walk(u, side, 0.5), y_at(u), 0.75 * u * ground
        xs = np.linspace(-0.9, 0.9, 9) * h
        tops = [(cx + xv, yb - h * rng.uniform(0.85, 1.0)) for xv in xs]
        items.append((yb, [('persongroup', [(cx - 0.9 * h, yb)] + tops + [(cx + 0.9 * h, yb)],
                            sc.jitter((90, 70, 80), 30), 'human', ())]))

    for _ in range(rng.integers(0, 3)):  # two-wheelers: thin frames, hollow wheels, often ridden
        kind = 'motorcycle' if rng.random() < 0.2 else 'bicycle'
        side, u = rng.choice((-1, 1)), rng.uniform(0.3, 1.0)
        r = (0.16 if kind == 'bicycle' else 0.19) * u * ground
        x0, yb = on_walk(u, side, rng.uniform(0.0, 0.4)) - 2.3 * r, y_at(u)
        mirror = bool(rng.random() < 0.5)
        half = max(0.6, (0.004 if kind == 'bicycle' else 0.012) * W * u)
        parts = [(kind, _thick_path(_cycle_path(x0, yb, r, mirror), half),
                  sc.jitter((40, 40, 50) if kind == 'bicycle' else (150, 20, 20), 20), 'flat', ())]
        if kind == 'motorcycle' or rng.random() < 0.5:
            seat_x = x0 + (2.9 if mirror else 1.7) * r
            parts.append(human('rider', seat_x, yb - 0.8 * r, 3.4 * r))
        items.append((yb, parts))

    items.sort(key=lambda item: item[0])
    for _, parts in items:
        for part in parts:
            sc.add(*part)
    if rng.random() < 0.4:  # ego vehicle bonnet (void)
        e = rng.uniform(0.04, 0.08) * H
        sc.add('ego vehicle', [(0, H - 1), (0, H - 1 - e), (0.2 * W, H - 1 - 1.4 * e), (0.8 * W, H - 1 - 1.4 * e),
                               (W - 1, H - 1 - e), (W - 1, H - 1)], sc.jitter((30, 30, 35), 5), 'flat')
    return sc.objects


def _rasterize(objects: list, height: int, width: int):
    """Object-index map (0 = nothing) and detail-shade map, painted in order with Pillow's polygon fill."""
    index = Image.new('I', (width, height), 0)
    shade = Image.new('L', (width, height), 0)
    draw_index, draw_shade = ImageDraw.Draw(index), ImageDraw.Draw(shade)
    for k, obj in enumerate(objects, 1):
        poly = [tuple(p) for p in obj['polygon']]
        draw_index.polygon(poly, fill=k)
        draw_shade.polygon(poly, fill=0)
        for value, detail in obj['details']:
            draw_shade.polygon([tuple(p) for p in detail], fill=value)
    return np.array(index, dtype=np.int32), np.array(shade)


def _object_ids(objects: list):
    """Per object: label id and Cityscapes instance id (k-th instance of a class -> classId*1000 + k in drawing
    order; a ``...group`` label -> the bare classId), as cityscapesscripts' json2instanceImg numbers them."""
    label_ids, inst_ids, counts = [0], [0], {}
    for obj in objects:
        name, group = obj['label'], False
        if name not in name2label and name.endswith('group'):
            name, group = name[:-len('group')], True
        lab = name2label[name]
        label_ids.append(lab.id)
        if lab.hasInstances and not group:
            inst_ids.append(lab.id * 1000 + counts.get(name, 0))
            counts[name] = counts.get(name, 0) + 1
        else:
            inst_ids.append(lab.id)
    return np.array(label_ids, np.int32), np.array(inst_ids, np.int32)


def _paint(rng: np.random.Generator, objects: list, index: np.ndarray, shade: np.ndarray) -> np.ndarray:
    h, w = index.shape
    yy, xx = np.mgrid[0:h, 0:w]
    fine = np.clip(rng.standard_normal((h, w), dtype=np.float32), -3, 3)
    low = rng.standard_normal((h // 16 + 2, w // 16 + 2), dtype=np.float32)
    blob = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    blob /= blob.std() + 1e-6
    bars = ((xx // 3) % 2) * 2.0 - 1.0
    tiles = -((xx % 12 == 0) | (yy % 8 == 0)).astype(np.float32)
    grad = (yy / max(h - 1, 1) - 0.5) * 2
    fields = np.stack([fine, blob, bars, tiles, grad], axis=-1).astype(np.float32)  # (H, W, 5)

    base = np.array([[0, 0, 0]] + [obj['color'] for obj in objects], dtype=np.float32)
    amps = np.array([[0.0] * 5] + [_TEXTURES[obj['tex']] for obj in objects], dtype=np.float32)
    tex = np.einsum('hwk,hwk->hw', amps[index], fields)
    rgb = base[index] * (1 + tex)[..., None]

    trousers = rng.integers(20, 90, 3)
    lamp = (230, 40, 30) if rng.random() < 0.5 else (40, 220, 90)
    shades = np.array([(0, 0, 0), (45, 55, 70), (22, 22, 24), trousers, (205, 165, 135), (225, 225, 220), lamp],
                      np.float32)
    detail = shade > 0
    rgb[detail] = shades[shade[detail]] * (1 + 0.05 * fine[detail])[:, None]

    direction = rng.uniform(-1, 1)
    rgb *= (0.9 + 0.15 * direction * (xx / max(w - 1, 1) - 0.5))[..., None].astype(np.float32)
    rgb += 3 * rng.standard_normal(rgb.shape, dtype=np.float32)
    rgb = cv2.GaussianBlur(rgb, (3, 3), 0.6)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def synthesize_scene(height: int = 256, width: int = 512, rng=0) -> SceneSample:
    """Make one scene in memory. ``rng``: a ``numpy.random.Generator`` or a seed."""
    if height < 32 or width < 32:
        raise ValueError(f'image size {height}x{width} is too small: use at least 32x32 (e.g. 64x128)')
    rng = np.random.default_rng(rng)
    objects = _layout(rng, height, width)
    index, shade = _rasterize(objects, height, width)
    obj_labels, obj_insts = _object_ids(objects)
    polygons = dict(imgHeight=height, imgWidth=width,
                    objects=[dict(label=o['label'], polygon=o['polygon']) for o in objects])
    return SceneSample(_paint(rng, objects, index, shade), polygons, obj_labels[index].astype(np.uint8),
                       obj_insts[index])


def _write_sample(sample: SceneSample, img_path: str, gt_prefix: str) -> None:
    os.makedirs(osp.dirname(img_path), exist_ok=True)
    os.makedirs(osp.dirname(gt_prefix), exist_ok=True)
    Image.fromarray(sample.image).save(img_path, compress_level=1)
    with open(gt_prefix + 'polygons.json', 'w') as f:
        json.dump(sample.polygons, f, sort_keys=True)
    Image.fromarray(sample.label_ids).save(gt_prefix + 'labelIds.png', compress_level=1)
    Image.fromarray(sample.instance_ids.astype(np.uint16)).save(gt_prefix + 'instanceIds.png', compress_level=1)
    color = np.concatenate([ID_TO_COLOR[sample.label_ids], np.full(sample.label_ids.shape + (1, ), 255, np.uint8)],
                           axis=-1)
    Image.fromarray(color, 'RGBA').save(gt_prefix + 'color.png', compress_level=1)
    Image.fromarray(ID_TO_TRAINID[sample.label_ids]).save(gt_prefix + 'labelTrainIds.png', compress_level=1)


def generate_synthetic_cityscapes(out_dir: str, num_train: int = 16, num_val: int = 4, height: int = 256,
                                  width: int = 512, seed: int = 0, overwrite: bool = False,
                                  panoptic: bool = True) -> dict:
    """Write a synthetic Cityscapes-format dataset to ``out_dir`` (layout in the module doc).

    Args:
        out_dir: dataset root (the ``data_root`` of the stock Cityscapes configs).
        num_train, num_val: number of images per split (a split with 0 images is not written).
        height, width: image size (default 256x512, Cityscapes' aspect ratio).
        seed: base seed; image i of a split is drawn from ``(seed, split, i)``.
        overwrite: replace ``leftImg8bit/``, ``gtFine/`` and ``annotations/`` if ``out_dir`` already has them and
            they were written by this function (``out_dir/.mmfusion-synthetic-cityscapes``); anything else is
            refused with a :class:`~mmfusion.utils.errors.UserError`.
        panoptic: also write the COCO-panoptic json and pngs.

    Returns:
        dict with ``root``, ``images`` (split -> image paths relative to ``leftImg8bit/{split}``),
        ``instance_ann_files`` and ``panoptic_ann_files`` (split -> json path).
    """
    counts = {'train': int(num_train), 'val': int(num_val)}
    if min(counts.values()) < 0 or sum(counts.values()) == 0:
        raise ValueError(f'need a non-negative number of images per split and at least one image, got {counts}')
    parts = [osp.join(out_dir, d) for d in ('leftImg8bit', 'gtFine', 'annotations')]
    existing = [p for p in parts if osp.exists(p) and (not osp.isdir(p) or os.listdir(p))]
    if existing and not is_owned(out_dir, MARKER_KIND):
        # a real dataset (or anything else) in this layout is never replaced, even with overwrite=True
        names = ', '.join(osp.basename(p) + '/' for p in existing)
        raise UserError(f'{out_dir} holds {names} that this generator did not write (no {MARKER_PREFIX}{MARKER_KIND} '
                        'in it), e.g. a real Cityscapes copy; choose another out_dir (nothing was deleted)')
    if existing and not overwrite:
        raise FileExistsError(f'{", ".join(existing)} already exist(s) and is not empty; choose another out_dir or '
                              'pass overwrite=True (CLI: --overwrite) to replace it')
    for path in existing:
        if osp.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    os.makedirs(out_dir, exist_ok=True)
    mark_dir(out_dir, MARKER_KIND)

    splits = tuple(s for s, n in counts.items() if n > 0)
    images = {}
    for split in splits:
        cities = CITIES[split]
        images[split] = []
        for i in range(counts[split]):
            city = cities[i % len(cities)]
            stem = f'{city}_{i:06d}_{FRAME:06d}'
            rng = np.random.default_rng([seed, _SPLIT_SEED[split], i])
            sample = synthesize_scene(height, width, rng)
            _write_sample(sample, osp.join(out_dir, 'leftImg8bit', split, city, stem + '_leftImg8bit.png'),
                          osp.join(out_dir, 'gtFine', split, city, stem + '_gtFine_'))
            images[split].append(f'{city}/{stem}_leftImg8bit.png')
    result = dict(root=out_dir, images=images, instance_ann_files=convert_cityscapes_instances(out_dir, splits=splits))
    result['panoptic_ann_files'] = convert_cityscapes_panoptic(out_dir, splits=splits) if panoptic else {}
    return result
