"""Parameters and FLOPs of an mmdet detector or mmseg segmentor, whole and per component
(``tools/analysis/get_flops.py``).

Components are found from attributes every mmfusion model has, whatever its scope:

- ``backbone.master`` and ``backbone.auxiliary`` of a fused (:class:`~mmfusion.models.MasterAuxBackbone`) model
  (the auxiliary runs only up to the injection stride), and what the fused backbone computes itself (the channel
  alignment of the injected maps: parameter-free ``mean_pad`` or learned ``conv``); or ``backbone`` alone;
- ``neck``, if any;
- the Mask2Former head, ``panoptic_head`` (mmdet ``Mask2Former``) or ``decode_head`` (mmseg ``EncoderDecoder``), split
  into its ``pixel_decoder``, its ``transformer_decoder`` and the rest of the head (query embeddings, level
  embeddings, input projections, class and mask predictions after each decoder layer); any other model (mmdet's
  DINO or Mask R-CNN, mmseg's UperNet, ...): ``heads``, everything after the backbone and neck that its test-time
  ``_forward`` runs (a DETR's transformer and box head, RPN and RoI heads, decode head);
- ``other``: whatever else the model holds or computes.

Each parameter and each operation belongs to the innermost component containing the module that owns or runs it,
so the components add up to the totals exactly.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (dispatcher-level, so it sees every matmul,
convolution and fused attention kernel whatever Python calls them, and needs no JIT tracing), attributed to
components by module hooks. Convention: **1 FLOP = 1 multiply-add**, as in fvcore, MMEngine and detectron2 (the
numbers the Mask2Former papers quote); torch counts 2 per multiply-add, so its counts are halved. As in those tools,
elementwise operations, normalisations, softmax and resampling are not counted; the operations seen without a formula
are listed in :attr:`ModelCost.uncounted_ops`. One exception, since it is the core of the pixel decoder and torch has
no formula for it: the sampling of mmcv's ``MultiScaleDeformableAttention`` (its projections are ordinary linear
layers, counted as such) is counted analytically, 5 multiply-adds per sampled value and channel (4 for the bilinear
interpolation, 1 for the attention-weighted sum), i.e. ``5 * batch * queries * embed_dims * levels * points`` per
call; it is reported separately in ``analytic_flops``.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop

from mmfusion.models.backbones.int8_linear import FrozenInt8Linear
from mmfusion.utils.errors import UserError

# Component keys, in display order, with their labels.
COMPONENT_LABELS = {
    'master': 'master encoder',
    'encoder': 'encoder',
    'auxiliary': 'auxiliary encoder',
    'fusion': 'fusion (align)',
    'neck': 'neck',
    'pixel_decoder': 'pixel decoder',
    'transformer_decoder': 'transformer decoder',
    'head_other': 'head (other)',
    'heads': 'heads (the rest of the model)',
    'other': 'other',
}
FLOP_UNIT = 'multiply-adds (the fvcore / MMEngine / detectron2 convention)'
# Operations that move or allocate data and compute nothing worth naming among the uncounted ones.
_DATA_OPS = frozenset({
    'alias', 'arange', 'as_strided', 'cat', 'clone', 'constant_pad_nd', 'contiguous', 'copy', 'copy_', 'detach',
    'empty', 'empty_like', 'empty_strided', 'expand', 'fill', 'fill_', 'flip', 'full', 'full_like', 'index',
    'index_put', 'index_put_', 'index_select', 'lift_fresh', 'lift_fresh_copy', 'masked_fill', 'masked_fill_',
    'new_empty', 'new_empty_strided', 'new_full', 'new_ones', 'new_zeros', 'ones', 'ones_like', 'repeat',
    'roll', 'scalar_tensor', 'select_scatter', 'slice_scatter', 'stack', 'where', 'zero_', 'zeros', 'zeros_like',
    '_to_copy', '_unsafe_view', 'nonzero', 'split_with_sizes', 'split', 'unbind', 'chunk', 'linspace',
    'pad', 'item', '_local_scalar_dense', 'to', 'clamp', 'clamp_', 'clamp_min', 'clamp_max',
})


class ComplexityError(UserError):
    """The model or the request cannot be analysed; the message says what to fix (tools print it as one line)."""


@dataclass
class ComponentCost:
    """Cost of one component.

    Args:
        key (str): Component key, one of :data:`COMPONENT_LABELS`.
        params (int): Number of parameters.
        trainable (int): Parameters with ``requires_grad``.
        flops (int): Multiply-adds of one forward pass, analytic part included.
        analytic_flops (int): The part of ``flops`` counted analytically (deformable-attention sampling).
    """

    key: str
    params: int = 0
    trainable: int = 0
    flops: int = 0
    analytic_flops: int = 0

    @property
    def name(self) -> str:
        return COMPONENT_LABELS.get(self.key, self.key)

    @property
    def frozen(self) -> int:
        return self.params - self.trainable


@dataclass
class ModelCost:
    """Cost of a model, per component (their sums are the totals).

    Args:
        components (list[ComponentCost]): Per component, in display order.
        input_shape (tuple[int, int]): (H, W) of the dummy input the FLOPs were counted on.
        uncounted_ops (dict[str, int]): Computing operations seen without a FLOP formula -> number of calls.
        elementwise (list[str]): The elementwise ones among ``uncounted_ops``.
        notes (list[str]): Facts about the count worth printing with it.
        name (str): What was analysed, e.g. the config path.
    """

    components: List[ComponentCost]
    input_shape: Tuple[int, int] = (0, 0)
    uncounted_ops: Dict[str, int] = field(default_factory=dict)
    elementwise: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    name: str = ''

    def total(self) -> ComponentCost:
        """The whole model as one :class:`ComponentCost` (key ``'total'``)."""
        out = ComponentCost('total')
        for c in self.components:
            out.params += c.params
            out.trainable += c.trainable
            out.flops += c.flops
            out.analytic_flops += c.analytic_flops
        return out

    def get(self, key: str) -> Optional[ComponentCost]:
        return next((c for c in self.components if c.key == key), None)

    def to_dict(self) -> dict:
        """JSON-ready dict: counts as integers, plus the unit convention."""
        def row(c: ComponentCost) -> dict:
            return dict(asdict(c), name=c.name, frozen=c.frozen)
        return dict(name=self.name, input_shape=list(self.input_shape), flop_unit=FLOP_UNIT,
                    components=[row(c) for c in self.components], total=row(self.total()),
                    uncounted_ops=dict(self.uncounted_ops), elementwise=list(self.elementwise),
                    notes=list(self.notes))


# --- components ------------------------------------------------------------------------------------------------


def mask2former_head(model: nn.Module) -> Optional[nn.Module]:
    """The Mask2Former head of an mmdet ``Mask2Former`` (``panoptic_head``) or mmseg model (``decode_head``): the
    head with a ``pixel_decoder`` and a ``transformer_decoder``; None for other models."""
    head = getattr(model, 'panoptic_head', None) or getattr(model, 'decode_head', None)
    return head if head is not None and all(hasattr(head, a) for a in ('pixel_decoder', 'transformer_decoder')) \
        else None


def find_components(model: nn.Module) -> Dict[str, nn.Module]:
    """The components of a model, by key (see the module docstring), in display order.

    Args:
        model (nn.Module): An mmdet detector or an mmseg segmentor (Mask2Former or any other head).

    Returns:
        dict[str, nn.Module]: ``master``, ``auxiliary`` and ``fusion`` (the fused backbone itself; its encoders are
        more specific) or ``encoder``; ``neck`` if any; for Mask2Former ``pixel_decoder``, ``transformer_decoder``
        and ``head_other`` (the head itself; its two decoders are more specific), else ``heads`` (the model itself:
        whatever no other component holds).

    Raises:
        ComplexityError: No backbone, or neither a Mask2Former model nor a model with a test-time ``_forward``.
    """
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        raise ComplexityError(f'{type(model).__name__} has no backbone; use an mmdet or mmseg model config')
    head = mask2former_head(model)
    if head is None and not callable(getattr(model, '_forward', None)):
        heads = [type(m).__name__ for n, m in model.named_children() if n not in ('backbone', 'neck')]
        raise ComplexityError(f'{type(model).__name__} with {", ".join(heads) or "no head"} is neither a '
                              'Mask2Former model nor an mmdet detector / mmseg segmentor (no _forward); use an '
                              'mmdet or mmseg model config')
    comps: Dict[str, nn.Module] = {}
    master, auxiliary = getattr(backbone, 'master', None), getattr(backbone, 'auxiliary', None)
    if isinstance(master, nn.Module) and isinstance(auxiliary, nn.Module):
        comps['master'] = master
        comps['auxiliary'] = auxiliary  # several auxiliaries: one nn.ModuleList
        comps['fusion'] = backbone
    else:
        comps['encoder'] = backbone
    neck = getattr(model, 'neck', None)
    if isinstance(neck, nn.Module):
        comps['neck'] = neck
    if head is None:
        comps['heads'] = model
        return comps
    comps['pixel_decoder'] = head.pixel_decoder
    comps['transformer_decoder'] = head.transformer_decoder
    comps['head_other'] = head
    return comps


def _component_of_names(model: nn.Module, components: Dict[str, nn.Module]) -> Callable[[str], str]:
    """A function mapping a dotted module/parameter name of ``model`` to its innermost component (or 'other')."""
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    prefixes = []
    for key, module in components.items():
        if id(module) not in names:
            raise ComplexityError(f'component {key!r} ({type(module).__name__}) is not a submodule of the model')
        prefixes.append((names[id(module)], key))
    prefixes.sort(key=lambda p: -len(p[0]))  # longest (innermost) first

    def component(name: str) -> str:
        for prefix, key in prefixes:
            if prefix == '' or name == prefix or name.startswith(prefix + '.'):
                return key
        return 'other'

    return component


# --- parameters ------------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module, components: Dict[str, nn.Module]) -> Dict[str, Tuple[int, int]]:
    """Parameters per component: ``{key: (total, trainable)}``, each shared parameter counted once.

    Every key of ``components`` is present, plus ``'other'`` for parameters outside them.
    """
    component = _component_of_names(model, components)
    counts = {key: [0, 0] for key in (*components, 'other')}
    for name, p in model.named_parameters():  # remove_duplicate=True: tied weights once
        entry = counts[component(name.rpartition('.')[0])]
        entry[0] += p.numel()
        entry[1] += p.numel() if p.requires_grad else 0
    for name, module in model.named_modules():  # int8 weights (aux_dtype='qint8') are packed, not parameters
        if isinstance(module, FrozenInt8Linear):
            counts[component(name)][0] += module.numel()
    return {k: (v[0], v[1]) for k, v in counts.items()}


# --- FLOPs -----------------------------------------------------------------------------------------------------


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # The CPU fused attention kernel has the same cost as the CUDA ones, which torch's registry covers.
    return sdpa_flop(query_shape, key_shape, value_shape)


def _int8_linear_flop(x_shape, packed, *args, out_shape=None, **kwargs) -> int:
    # FrozenInt8Linear (aux_dtype='qint8'): the multiply-adds of the float Linear it stands for, 2 FLOPs each as
    # torch's own formulas count them.
    return 2 * math.prod(x_shape) * out_shape[-1]


def _extra_formulas() -> dict:
    aten = torch.ops.aten
    extra = {torch.ops.quantized.linear_dynamic: _int8_linear_flop}
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu'):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flop
    return extra


def _msda_class():
    try:
        from mmcv.ops import MultiScaleDeformableAttention
    except ImportError:  # without compiled mmcv there is no such module to count
        return None
    return MultiScaleDeformableAttention


def deformable_sampling_flops(module: nn.Module, query: torch.Tensor) -> int:
    """Multiply-adds of the sampling of one ``MultiScaleDeformableAttention`` call (see the module docstring).

    Args:
        module (nn.Module): The attention (``embed_dims``, ``num_levels``, ``num_points`` attributes).
        query (Tensor): Its query, (B, Q, C) or (Q, B, C).

    Returns:
        int: ``5 * B * Q * embed_dims * num_levels * num_points``.
    """
    queries = query.numel() // module.embed_dims  # B * Q in either layout
    return 5 * queries * module.embed_dims * module.num_levels * module.num_points


class _UncountedOps(TorchDispatchMode):
    """Records the computing operations that reach the dispatcher without a FLOP formula."""

    def __init__(self, registry: dict) -> None:
        super().__init__()
        self.registry = registry
        self.seen: Counter = Counter()
        self.elementwise: set = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet not in self.registry and not func.is_view:
            name = packet.__name__
            if name.rstrip('_') not in _DATA_OPS and name not in _DATA_OPS and not name.startswith(('sym_', 'is_')):
                self.seen[name] += 1
                if torch.Tag.pointwise in func.tags:
                    self.elementwise.add(name)
        return func(*args, **(kwargs or {}))


@dataclass
class FlopCount:
    """FLOPs (multiply-adds) of one forward pass per component key, and what the counter could not see.

    Args:
        flops (dict[str, int]): Per component key (``'other'`` for operations outside every component).
        analytic (dict[str, int]): Per component key, the part counted analytically.
        uncounted_ops (dict[str, int]): Computing operations without a formula -> calls.
        elementwise (list[str]): The elementwise ones among ``uncounted_ops``.
    """

    flops: Dict[str, int]
    analytic: Dict[str, int]
    uncounted_ops: Dict[str, int]
    elementwise: List[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.flops.values())


def count_flops(model: nn.Module, forward: Callable[[], object],
                components: Optional[Dict[str, nn.Module]] = None) -> FlopCount:
    """Count the multiply-adds of ``forward()`` and attribute them to the components of ``model``.

    An operation belongs to the innermost component containing the module that is running when it executes;
    operations run by no component's module go to ``'other'``. Module hooks find the running module, so modules a
    parent calls directly (e.g. ``transformer_decoder.layers[i]`` called by the head) are attributed correctly.

    Args:
        model (nn.Module): The model ``forward`` runs.
        forward (Callable[[], object]): Runs the model once (the caller chooses no_grad, eval mode, inputs).
        components (dict[str, nn.Module], optional): Submodules of ``model`` by key. Default: None, i.e. the whole
            model is ``'other'``.

    Returns:
        FlopCount: FLOPs per key (every key of ``components`` plus ``'other'``).
    """
    components = components or {}
    component = _component_of_names(model, components)
    flops = {key: 0 for key in (*components, 'other')}
    analytic = {key: 0 for key in flops}
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    recorder = _UncountedOps(counter.flop_registry)
    stack: List[str] = []
    last = [0]

    def boundary() -> None:
        # Everything counted since the last module boundary ran in the innermost active component.
        now = counter.get_total_flops()
        flops[stack[-1] if stack else 'other'] += now - last[0]
        last[0] = now

    msda = _msda_class()
    handles = []
    for name, module in model.named_modules():
        key = component(name)

        def pre_hook(mod, args, key=key):
            boundary()
            stack.append(key)

        def post_hook(mod, args, kwargs, output, key=key):
            boundary()
            stack.pop()
            if msda is not None and isinstance(mod, msda):
                query = args[0] if args else kwargs['query']
                extra = 2 * deformable_sampling_flops(mod, query)  # halved with the rest below
                flops[key] += extra
                analytic[key] += extra

        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook, with_kwargs=True, always_call=True))
    try:
        # The recorder sits below the counter, so it sees the operations the counter executes, after the counter
        # has decomposed those it has no formula for.
        with recorder, counter:
            forward()
            boundary()
    finally:
        for h in handles:
            h.remove()
    # torch counts 2 FLOPs per multiply-add; every formula it applies here (mm, bmm, conv, attention) is 2 x MACs.
    return FlopCount(flops={k: v // 2 for k, v in flops.items()}, analytic={k: v // 2 for k, v in analytic.items()},
                     uncounted_ops=dict(recorder.seen.most_common()), elementwise=sorted(recorder.elementwise))


# --- Mask2Former models ----------------------------------------------------------------------------------------


def config_input_shape(cfg) -> Tuple[Tuple[int, int], str]:
    """The (H, W) a config tests at, and where it was read.

    The first ``Resize`` with a ``scale`` in ``test_dataloader.dataset.pipeline`` (``scale`` is (w, h); with
    ``keep_ratio`` it bounds the image, e.g. exactly 1024x2048 for Cityscapes' 2048x1024 images), else the config's
    ``crop_size``.

    Raises:
        ComplexityError: Neither is found; pass the shape explicitly.
    """
    try:
        pipeline = cfg.test_dataloader.dataset.pipeline
    except AttributeError:
        pipeline = cfg.get('test_pipeline') or []
    for step in pipeline or []:
        if isinstance(step, dict) and 'Resize' in str(step.get('type', '')) and step.get('scale') is not None:
            scale = step['scale']
            if isinstance(scale, int):
                return (scale, scale), f'test pipeline {step["type"]} scale={scale}'
            return (int(scale[1]), int(scale[0])), f'test pipeline {step["type"]} scale={tuple(scale)} (w, h)'
    crop = cfg.get('crop_size')
    if crop is not None:
        return (int(crop[0]), int(crop[1])), f'crop_size={tuple(crop)}'
    raise ComplexityError('cannot find the test image size in the config (no Resize scale in the test pipeline, '
                          'no crop_size); pass --shape H W')


def padded_shape(model: nn.Module, shape: Sequence[int]) -> Tuple[int, int]:
    """``shape`` padded up to the data preprocessor's size divisor (what the model sees at test time)."""
    pre = getattr(model, 'data_preprocessor', None)
    div = getattr(pre, 'pad_size_divisor', None) or getattr(pre, 'size_divisor', None) or 1
    return tuple(int(math.ceil(s / div) * div) for s in shape)


def _data_samples(model: nn.Module, shape: Tuple[int, int]) -> list:
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    from mmdet.models.detectors import BaseDetector
    if isinstance(model, BaseDetector):
        from mmdet.structures import DetDataSample
        return [DetDataSample(metainfo=meta)]
    from mmseg.structures import SegDataSample
    return [SegDataSample(metainfo=meta)]


def check_shape(shape: Sequence[int]) -> Tuple[int, int]:
    """``shape`` as an (H, W) tuple of positive ints.

    Raises:
        ComplexityError: Not two positive ints.
    """
    shape = tuple(shape)
    if len(shape) != 2 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ComplexityError(f'input shape must be two positive ints (H, W), got {shape!r}')
    return shape


def model_complexity(model: nn.Module, shape: Sequence[int], name: str = '', shape_source: str = '') -> ModelCost:
    """Parameters and FLOPs of a model, per component, for one image of ``shape``.

    The model runs in eval mode under ``torch.no_grad()`` on one random normalised image (batch 1, padded to the
    data preprocessor's size divisor), through ``extract_feat`` and the Mask2Former head's ``forward`` (other models:
    their test-time ``_forward``): the network itself,
    without data preprocessing and post-processing (mask resizing, instance selection). Weights do not matter;
    ``init_weights`` is never called.

    Args:
        model (nn.Module): A built mmdet detector or mmseg segmentor (e.g. ``Mask2Former``, ``DINO``,
            ``MaskRCNN``, ``EncoderDecoder`` with a Mask2Former or UperNet head).
        shape (Sequence[int]): (H, W) of the image.
        name (str): Label of the result (e.g. the config path). Default: ''.
        shape_source (str): Where ``shape`` comes from, for the notes (e.g. ``'--shape'``). Default: ''.

    Returns:
        ModelCost: Per component and in total. ``fusion`` and ``other`` are left out when they hold no parameter
        and no FLOP.

    Raises:
        ComplexityError: Not an mmdet/mmseg model, or a bad shape.
    """
    shape = check_shape(shape)
    components = find_components(model)
    head = components.get('head_other')  # the Mask2Former head, when the model has one
    params = count_parameters(model, components)
    size = padded_shape(model, shape)
    device = next(model.parameters()).device
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    samples = _data_samples(model, size)
    was_training = model.training
    model.eval()

    def forward():
        with torch.no_grad():
            if head is not None:
                return head(model.extract_feat(image), samples)
            return model._forward(image, samples)  # the detector's / segmentor's network, no post-processing

    try:
        flops = count_flops(model, forward, components)
    finally:
        model.train(was_training)
    comps = []
    for key in (*components, 'other'):
        total, trainable = params[key]
        if key in ('fusion', 'other') and not (total or flops.flops[key]):
            continue
        comps.append(ComponentCost(key, total, trainable, flops.flops[key], flops.analytic[key]))
    return ModelCost(comps, shape, flops.uncounted_ops, flops.elementwise,
                     _notes(model, shape, size, shape_source, flops), name)


def _notes(model: nn.Module, shape, size, shape_source: str, flops: FlopCount) -> List[str]:
    padded = f', padded from {shape[0]}x{shape[1]}' if tuple(size) != tuple(shape) else ''
    source = f', size from {shape_source}' if shape_source else ''
    notes = [f'input 1x3x{size[0]}x{size[1]}{padded}{source}']
    backbone = getattr(model, 'backbone', None)
    inject = getattr(backbone, 'inject_strides', None)
    auxiliaries = getattr(backbone, 'auxiliaries', None) or [getattr(backbone, 'auxiliary', None)]
    aux_strides = [tuple(a.out_strides) for a in auxiliaries if getattr(a, 'out_strides', None) is not None]
    if aux_strides:
        upto = ', '.join(str(max(s)) for s in aux_strides)
        notes.append(f'auxiliary encoder computed up to stride {upto}' +
                     (f', injected at stride {", ".join(map(str, inject))}' if inject else ''))
    analytic = sum(flops.analytic.values())
    if analytic:
        notes.append(f'deformable-attention sampling counted analytically: {analytic / 1e9:.2f} GFLOPs '
                     '(5 multiply-adds per sampled value and channel: bilinear interpolation + weighted sum)')
    return notes


# --- formatting ------------------------------------------------------------------------------------------------


def _m(n: int) -> str:
    return f'{n / 1e6:.2f}'


def _g(n: int) -> str:
    return f'{n / 1e9:.2f}'


def _ratio(a: float, b: float) -> str:
    return f'{a / b:.2f}x' if b else '-'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]

    def line(cells):
        return '  '.join(f'{c:<{w}}' if i == 0 else f'{c:>{w}}' for i, (c, w) in enumerate(zip(cells, widths)))

    return '\n'.join([line(header), '  '.join('-' * w for w in widths), *map(line, rows)])


def uncounted_note(cost: ModelCost, limit: int = 10) -> str:
    """One line naming the operations without a FLOP formula: the others by calls, then the elementwise ones."""
    if not cost.uncounted_ops:
        return 'Not counted: nothing (every computing operation had a formula).'
    elementwise = set(cost.elementwise)
    others = [(k, v) for k, v in cost.uncounted_ops.items() if k not in elementwise]
    parts = [f'{k} x{v}' + (' (deformable sampling, counted analytically)' if k == 'grid_sampler_2d' else '')
             for k, v in others[:limit]]
    if len(others) > limit:
        parts.append(f'{len(others) - limit} more')
    if elementwise:
        calls = sum(cost.uncounted_ops[k] for k in elementwise)
        names = sorted(elementwise, key=lambda k: -cost.uncounted_ops[k])
        parts.append(f'elementwise x{calls} ({", ".join(names[:6])}{", ..." if len(names) > 6 else ""})')
    return ('Not counted (no FLOP formula; normalisation, softmax, resampling and elementwise operations are free by '
            f'convention): {"; ".join(parts)}.')


def format_cost(cost: ModelCost) -> str:
    """A table: component, parameters (M) total/trainable/frozen, GFLOPs, % of the FLOPs; then the notes."""
    total = cost.total()
    rows = []
    for c in (*cost.components, total):
        pct = f'{100 * c.flops / total.flops:.1f}' if total.flops else '-'
        rows.append([c.name, _m(c.params), _m(c.trainable), _m(c.frozen), _g(c.flops), pct])
    title = f'{cost.name}  input {cost.input_shape[0]}x{cost.input_shape[1]}' if cost.name else (
        f'input {cost.input_shape[0]}x{cost.input_shape[1]}')
    lines = [title, _table(['component', 'params(M)', 'trainable(M)', 'frozen(M)', 'GFLOPs', '% FLOPs'], rows)]
    lines.append(f'params in millions; GFLOPs in 1e9 {FLOP_UNIT}.')
    lines += [f'Note: {n}.' for n in cost.notes]
    lines.append(uncounted_note(cost))
    return '\n'.join(lines)


def _aligned_key(key: str) -> str:
    # A single-encoder model's encoder faces a fused model's master.
    return 'master' if key == 'encoder' else key


def compare(a: ModelCost, b: ModelCost) -> Dict[str, dict]:
    """Per component and in total: A's and B's params, trainable params and FLOPs, with the ratios A / B.

    Rows are keyed by component key (an ``encoder`` is matched with the other model's ``master``); a component
    only one model has gets 0 for the other, and a ratio is None where B's value is 0.

    Returns:
        dict[str, dict]: ``{key: {'name': str, 'params'|'trainable'|'flops': {'a', 'b', 'ratio'}}}``, in display
        order, ending with ``'total'``.
    """
    by_a = {_aligned_key(c.key): c for c in a.components}
    by_b = {_aligned_key(c.key): c for c in b.components}
    keys = list(by_a) + [k for k in by_b if k not in by_a]
    rows = {}
    for key in keys + ['total']:
        if key == 'total':
            ca, cb, name = a.total(), b.total(), 'total'
        else:
            ca, cb = by_a.get(key, ComponentCost(key)), by_b.get(key, ComponentCost(key))
            names = [c.name for c in (by_a.get(key), by_b.get(key)) if c is not None]
            name = ' / '.join(dict.fromkeys(names))
        rows[key] = dict(name=name)
        for f in ('params', 'trainable', 'flops'):
            va, vb = getattr(ca, f), getattr(cb, f)
            rows[key][f] = dict(a=va, b=vb, ratio=va / vb if vb else None)
    return rows


def format_comparison(a: ModelCost, b: ModelCost) -> str:
    """A and B side by side: params (M), trainable (M) and GFLOPs of each, with the ratios A / B."""
    rows = []
    for r in compare(a, b).values():
        row = [r['name']]
        for f, fmt in (('params', _m), ('trainable', _m), ('flops', _g)):
            row += [fmt(r[f]['a']), fmt(r[f]['b']), '-' if r[f]['ratio'] is None else f'{r[f]["ratio"]:.2f}x']
        rows.append(row)
    header = ['component', 'params A', 'params B', 'A/B', 'train A', 'train B', 'A/B', 'GFLOPs A', 'GFLOPs B',
              'A/B']
    lines = [f'A: {a.name}  input {a.input_shape[0]}x{a.input_shape[1]}',
             f'B: {b.name}  input {b.input_shape[0]}x{b.input_shape[1]}',
             _table(header, rows),
             f'params and trainable params in millions; GFLOPs in 1e9 {FLOP_UNIT}.']
    for tag, cost in (('A', a), ('B', b)):
        lines += [f'Note ({tag}): {n}.' for n in cost.notes]
        lines.append(f'({tag}) {uncounted_note(cost)}')
    return '\n'.join(lines)
