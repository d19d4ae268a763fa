"""ONNX export (tools/deployment/pytorch2onnx.py) and ONNX Runtime inference (tools/deployment/onnx_infer.py) of
tiny configs of each task, exported inside the test: ONNX Runtime predicts what PyTorch predicts.

Raw outputs within 1e-3 of their scale; semantic label maps equal on >= 99.9 % of the pixels; instance / panoptic the
same kept queries (labels, scores) with mask IoU >= 0.99; only standard ONNX operators (GridSample for the deformable
attention); the post-processing both paths share reproduces PyTorch's ``predict`` exactly; and the two tools write
the same ``pred/`` files for the demo's model.
"""
import copy
import os.path as osp

import cv2
import numpy as np
import onnx  # requirements/deploy.txt, installed by tools/setup_env.sh: a missing one fails, not skips
import pytest
import torch
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from tests._fusion_cfg import shrink_fusion_model
from tests._tools import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'semantic': 'configs/mask2former_d3s2_cityscapes_semantic.py',
    'instance': 'configs/mask2former_d3s2_cityscapes.py',
    'panoptic': 'configs/mask2former_d3s2_cityscapes_panoptic.py',
    'baseline': 'configs/baselines/mask2former_d3_cityscapes.py',  # single encoder (DINOv3), instance
}
SIZE = (64, 128)  # (h, w) of the test images and of the tiny models' test size
REL_TOL = 1e-3
CLASS_GAIN, MASK_GAIN = 20.0, 10.0  # scale of the random head's class and mask projections (see save_checkpoint)


def set_test_size(cfg, size):
    """The test pipeline's Resize at ``size`` (h, w), wherever the step sits."""
    for step in cfg.test_dataloader.dataset.pipeline:
        if str(step['type']).endswith('Resize'):
            step['scale'] = (size[1], size[0])
    return cfg


def tiny_config(name, out_dir):
    cfg = Config.fromfile(osp.join(ROOT, CONFIGS[name]))
    shrink_fusion_model(cfg.model)
    set_test_size(cfg, SIZE)
    path = osp.join(out_dir, f'tiny_{name}.py')
    cfg.dump(path)
    return path


def save_checkpoint(config, path, seed=0):
    """Weights as tools/train.py writes them (state_dict + dataset_meta), of a freshly built (random) model."""
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    head = getattr(model, 'decode_head', None) or model.panoptic_head
    with torch.no_grad():  # peaked class scores and sharp masks: random heads give one class everywhere otherwise
        head.cls_embed.weight.mul_(CLASS_GAIN)
        head.mask_embed[-1].weight.mul_(MASK_GAIN)
    meta = dict(dataset_meta=dict(classes=tuple(f'c{i}' for i in range(_num_classes(cfg))),
                                  palette=[(i * 12 % 256, i * 40 % 256, i * 70 % 256) for i in
                                           range(_num_classes(cfg))]))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)
    return path


def _num_classes(cfg):
    head = cfg.model.get('decode_head') or cfg.model.get('panoptic_head')
    return head['num_classes'] if 'num_classes' in head else head['num_things_classes'] + head['num_stuff_classes']


def write_image(path, size=SIZE, seed=0):
    """A street-like picture (smooth regions and edges; noise alone gives no confident masks)."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 150, 90)
    img[h // 2:] = (60, 60, 60)
    for _ in range(4):
        x, y = rng.integers(0, w - 16), rng.integers(0, h - 16)
        img[y:y + 16, x:x + rng.integers(8, 24)] = rng.integers(0, 255, 3)
    img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), img)
    return str(path)


@pytest.fixture(scope='module')
def export_tool():
    return load_tool('deployment/pytorch2onnx.py')


@pytest.fixture(scope='module')
def infer_tool():
    return load_tool('deployment/onnx_infer.py')


@pytest.fixture(scope='module')
def exported(tmp_path_factory, export_tool):
    """name -> (config, checkpoint, onnx, export result) for the tiny semantic, instance and panoptic models."""
    done = {}

    def get(name, extra=()):
        key = (name, tuple(extra))
        if key not in done:
            folder = str(tmp_path_factory.mktemp(name))
            config = tiny_config(name, folder)
            ckpt = save_checkpoint(config, osp.join(folder, 'tiny.pth'))
            out = osp.join(folder, 'model.onnx')
            result = export_tool.main([config, ckpt, '--out', out, *extra])
            done[key] = (config, ckpt, out, result)
        return done[key]

    return get


def preprocessed(inferencer, image):
    """The collated batch the stock inferencer feeds its model for ``image`` (mmdet's preprocess also yields the
    original inputs, mmseg's only the batch)."""
    item, = list(inferencer._inferencer.preprocess([image], batch_size=1))
    return item[1] if isinstance(item, (tuple, list)) else item


def torch_and_ort(config, ckpt, onnx_file, image):
    """Both models on the same preprocessed image: (PyTorch raw outputs, ORT raw outputs, PyTorch predictions,
    ORT predictions)."""
    from mmfusion.apis.inference import FusionInferencer
    from mmfusion.deployment.export import ExportWrapper, model_task
    from mmfusion.deployment.runtime import OnnxInferencer
    pt = FusionInferencer(config, ckpt)
    ox = OnnxInferencer(config, onnx_file)
    data = preprocessed(pt, image)
    model = pt._inferencer.model
    batch = model.data_preprocessor(copy.deepcopy(data), False)
    task = model_task(Config.fromfile(config))
    with torch.no_grad():
        raw_pt = ExportWrapper(model, task)(batch['inputs'])
        raw_pt = [t.numpy() for t in (raw_pt if isinstance(raw_pt, tuple) else (raw_pt, ))]
        pred_pt = model.test_step(copy.deepcopy(data))
    raw_ort = ox.session.run(batch['inputs'])
    pred_ort = ox._inferencer.model.test_step(copy.deepcopy(data))
    return raw_pt, raw_ort, pred_pt, pred_ort


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def mask_iou(a, b):
    a, b = a.bool(), b.bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def test_graph_has_only_standard_operators(exported):
    from mmfusion.deployment.export import graph_domains, read_spec
    config, _, path, result = exported('semantic')
    proto = onnx.load(path)
    ops = {n.op_type for n in proto.graph.node}
    assert graph_domains(proto) == {''} and result['domains'] == ['']
    assert 'GridSample' in ops  # the pixel decoder's multi-scale deformable attention, as a standard op
    assert not any('Deform' in op for op in ops)
    spec = read_spec(proto, path)
    assert spec['task'] == 'semantic' and spec['input'] == ['input', 1, 3, *SIZE]
    assert spec['dynamic'] == dict(batch=False, spatial=False)
    assert spec['dataset_meta']['classes'][:2] == ['c0', 'c1'] and spec['outputs'] == ['seg_logits']
    assert max(result['max_rel_diff'].values()) <= REL_TOL


def test_semantic_ort_equals_pytorch(exported, tmp_path):
    config, ckpt, path, _ = exported('semantic')
    raw_pt, raw_ort, pred_pt, pred_ort = torch_and_ort(config, ckpt, path, write_image(tmp_path / 'a.png'))
    assert raw_pt[0].shape == raw_ort[0].shape == (1, 19, *SIZE)
    assert rel(raw_ort[0], raw_pt[0]) <= REL_TOL
    a, b = pred_pt[0].pred_sem_seg.data, pred_ort[0].pred_sem_seg.data
    assert a.shape == b.shape == (1, *SIZE)
    assert (a == b).float().mean().item() >= 0.999
    assert len(torch.unique(a)) > 1  # a real map, not one class everywhere


@pytest.mark.parametrize('name', ['instance', 'baseline'])
def test_instance_ort_equals_pytorch(exported, tmp_path, name):
    config, ckpt, path, _ = exported(name)
    raw_pt, raw_ort, pred_pt, pred_ort = torch_and_ort(config, ckpt, path, write_image(tmp_path / 'a.png'))
    for o, t in zip(raw_ort, raw_pt):
        assert o.shape == t.shape and rel(o, t) <= REL_TOL
    a, b = pred_pt[0].pred_instances, pred_ort[0].pred_instances
    assert len(a) == len(b) == 5  # max_per_image of the tiny config
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.scores, b.scores, atol=1e-4)
    for ma, mb in zip(a.masks, b.masks):
        if ma.any() or mb.any():
            assert mask_iou(ma, mb) >= 0.99
    assert any(m.any() for m in a.masks)


def test_panoptic_ort_equals_pytorch(exported, tmp_path):
    config, ckpt, path, _ = exported('panoptic')
    raw_pt, raw_ort, pred_pt, pred_ort = torch_and_ort(config, ckpt, path, write_image(tmp_path / 'a.png'))
    for o, t in zip(raw_ort, raw_pt):
        assert rel(o, t) <= REL_TOL
    a, b = pred_pt[0].pred_panoptic_seg.sem_seg[0], pred_ort[0].pred_panoptic_seg.sem_seg[0]
    ids = torch.unique(a)
    assert torch.equal(ids, torch.unique(b))  # the same kept segments (query labels and instance ids)
    for i in ids:
        assert mask_iou(a == i, b == i) >= 0.99
    assert (a == b).float().mean().item() >= 0.999


def test_second_size_and_dynamic_batch_match_pytorch(exported, tmp_path):
    """Exported at a second size (--shape 96 160) with a dynamic batch (--dynamic batch): the same as PyTorch at that
    size, through the whole prediction, and on a batch of two."""
    size2 = (96, 160)
    config, ckpt, path, result = exported('semantic', extra=('--shape', *map(str, size2), '--dynamic', 'batch'))
    assert result['spec']['dynamic'] == dict(batch=True, spatial=False)
    assert max(result['dynamic_rel_diff'].values()) <= REL_TOL  # the tool's own check at batch 2
    cfg = set_test_size(Config.fromfile(config), size2)
    config2 = str(tmp_path / 'second_size.py')
    cfg.dump(config2)
    raw_pt, raw_ort, pred_pt, pred_ort = torch_and_ort(config2, ckpt, path,
                                                      write_image(tmp_path / 'b.png', size=size2, seed=1))
    assert raw_ort[0].shape == (1, 19, *size2) and rel(raw_ort[0], raw_pt[0]) <= REL_TOL
    a, b = pred_pt[0].pred_sem_seg.data, pred_ort[0].pred_sem_seg.data
    assert (a == b).float().mean().item() >= 0.999

    from mmfusion.apis.inference import FusionInferencer
    from mmfusion.deployment.export import ExportWrapper
    from mmfusion.deployment.runtime import OrtSession
    model = FusionInferencer(config, ckpt)._inferencer.model
    x = torch.randn(2, 3, *size2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = ExportWrapper(model, 'semantic')(x).numpy()
    out, = OrtSession(path).run(x)
    assert out.shape == (2, 19, *size2) and rel(out, ref) <= REL_TOL
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.999


@pytest.mark.parametrize('how', ['flag', 'size'])
def test_external_data_export_moves_with_its_weights(exported, export_tool, infer_tool, tmp_path, monkeypatch, capsys,
                                                     how):
    """Weights in FILE.onnx.data (--external-data, or weights over the size limit, lowered here): exactly two files
    written, the graph names its weights relative to itself, the pair runs where it is moved to and predicts what the
    inline export predicts; the .onnx without its .data is refused in one line."""
    import shutil

    from mmfusion.deployment import export as export_mod
    from mmfusion.deployment.runtime import OrtSession
    config, ckpt, inline, _ = exported('semantic')
    out = tmp_path / 'ext' / 'm.onnx'
    if how == 'size':
        monkeypatch.setattr(export_mod, 'EXTERNAL_DATA_BYTES', 1)
    result = export_tool.main([config, ckpt, '--out', str(out)] + (['--external-data'] if how == 'flag' else []))
    assert result['external_data'] == str(out) + '.data'
    assert sorted(p.name for p in out.parent.iterdir()) == ['m.onnx', 'm.onnx.data']  # no temporary folder left
    assert f'wrote {out} with its weights in {out}.data' in capsys.readouterr().out
    proto = onnx.load(str(out), load_external_data=False)
    big = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert big and {e.value for t in big for e in t.external_data if e.key == 'location'} == {'m.onnx.data'}
    stored = sum(int(e.value) for t in big for e in t.external_data if e.key == 'length')
    assert stored > osp.getsize(inline) / 2 and osp.getsize(str(out) + '.data') >= stored  # the tiny model's bulk

    moved = tmp_path / 'moved'
    shutil.move(str(out.parent), str(moved))
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(5))
    ref, = OrtSession(inline).run(x)
    got, = OrtSession(str(moved / 'm.onnx')).run(x)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()

    (moved / 'm.onnx.data').unlink()
    assert _one_line(capsys, lambda: infer_tool.main([config, str(moved / 'm.onnx'), write_image(tmp_path / 'a.png'),
                                                      '--out-dir', str(tmp_path / 'o')])) == \
        f'error: {moved / "m.onnx"} keeps its weights in m.onnx.data, which is not beside it; copy m.onnx.data ' \
        f'into {moved} with it (the two files move together)'


def test_save_onnx_gathers_per_tensor_weight_files(tmp_path, monkeypatch):
    """What torch's exporter writes for a model over 2 GiB (one file per tensor) becomes one FILE.onnx.data above
    the size limit, or goes inline below it; external=False above it is refused."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mmfusion.deployment import export as export_mod
    from mmfusion.utils.errors import UserError
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 64), np.float32), rng.standard_normal((64, 4), np.float32)
    graph = helper.make_graph(
        [helper.make_node('MatMul', ['x', 'w1'], ['h']), helper.make_node('MatMul', ['h', 'w2'], ['y'])], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w1, 'w1'), numpy_helper.from_array(w2, 'w2')])
    torch_like = tmp_path / 'torch'
    torch_like.mkdir()
    onnx.save_model(helper.make_model(graph), str(torch_like / 'm.onnx'), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    assert sorted(p.name for p in torch_like.iterdir()) == ['m.onnx', 'w1', 'w2']
    x = rng.standard_normal((2, 8), np.float32)

    def run(path):
        return ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'x': x})[0]

    monkeypatch.setattr(export_mod, 'EXTERNAL_DATA_BYTES', 1000)  # w1 + w2 = 3072 bytes
    for folder, expect in (('above', ['m.onnx', 'm.onnx.data']), ('below', ['m.onnx'])):
        if folder == 'below':
            monkeypatch.setattr(export_mod, 'EXTERNAL_DATA_BYTES', 10_000)
        (tmp_path / folder).mkdir()
        location = export_mod.save_onnx(onnx.load(str(torch_like / 'm.onnx')), str(tmp_path / folder / 'm.onnx'))
        assert location == (expect[1] if len(expect) == 2 else None)
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == expect
        np.testing.assert_allclose(run(tmp_path / folder / 'm.onnx'), x @ w1 @ w2, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(export_mod, 'EXTERNAL_DATA_BYTES', 1000)
    with pytest.raises(UserError, match=r'more than one \.onnx file can hold'):
        export_mod.save_onnx(onnx.load(str(torch_like / 'm.onnx')), str(tmp_path / 'no.onnx'), external=False)
    assert not (tmp_path / 'no.onnx').exists()


def test_dynamic_size_is_refused_naming_what_is_static(exported, export_tool, tmp_path, capsys):
    """The shipped encoders pad and window with Python size arithmetic that the TorchScript exporter records as
    constants: --dynamic (batch, height, width) is checked at another size, refused in one line naming the sizes
    that stay static and where they were fixed, and nothing is written."""
    config, ckpt, _, _ = exported('semantic')
    out = tmp_path / 'dyn.onnx'
    with pytest.raises(SystemExit) as e:
        export_tool.main([config, ckpt, '--out', str(out), '--dynamic'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith('error: --dynamic all: the graph of ') and 'keeps the height and width it was traced at ' \
        '(1x3x64x128) (sizes fixed at mmfusion/models/backbones/base_vfm.py:' in err
    assert 'checked at 2x3x96x192, ONNX Runtime ' in err and '(--dynamic batch gives a dynamic batch)' in err
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left


@pytest.mark.parametrize('name', ['semantic', 'instance', 'panoptic'])
def test_shared_postprocessing_reproduces_pytorch_predict(exported, tmp_path, name):
    """The post-processing the ONNX path runs (mmfusion.deployment.postprocess) on PyTorch's own raw outputs gives
    exactly PyTorch's predict (label maps, logits, instances, panoptic maps): the two paths differ only in the graph."""
    from mmfusion.apis.inference import FusionInferencer
    from mmfusion.deployment.export import ExportWrapper
    from mmfusion.deployment.postprocess import build_fusion_head, det_postprocess, seg_postprocess
    config, ckpt, _, _ = exported(name)
    pt = FusionInferencer(config, ckpt)
    data = preprocessed(pt, write_image(tmp_path / 'a.png'))
    model = pt._inferencer.model
    batch = model.data_preprocessor(copy.deepcopy(data), False)
    with torch.no_grad():
        stock = model.predict(batch['inputs'], copy.deepcopy(batch['data_samples']))
        raw = ExportWrapper(model, name)(batch['inputs'])
    samples = copy.deepcopy(batch['data_samples'])
    if name == 'semantic':
        ours = seg_postprocess(raw, samples, model.align_corners, getattr(model.decode_head, 'threshold', None))
        assert torch.equal(ours[0].pred_sem_seg.data, stock[0].pred_sem_seg.data)
        assert torch.equal(ours[0].seg_logits.data, stock[0].seg_logits.data)
    else:
        ours = det_postprocess(raw[0], raw[1], samples, build_fusion_head(Config.fromfile(config).model))
        assert ('pred_panoptic_seg' in stock[0]) == (name == 'panoptic')
        if name == 'panoptic':
            assert torch.equal(ours[0].pred_panoptic_seg.sem_seg, stock[0].pred_panoptic_seg.sem_seg)
        if 'pred_instances' in stock[0]:
            for key in ('labels', 'scores', 'masks', 'bboxes'):
                assert torch.equal(getattr(ours[0].pred_instances, key), getattr(stock[0].pred_instances, key)), key


@pytest.fixture(scope='module')
def demo_model(tmp_path_factory):
    """The demo's config (tools/demo.py, configs/demo/...semantic_demo.py) at its --smoke size: the smoke
    encoders (DINOv3 / SAM2.1 Hiera of the real architectures, toy widths), the smoke head, 64x128 images."""
    demo = load_tool('demo.py')
    folder = tmp_path_factory.mktemp('demo')
    cfg = Config.fromfile(demo.DEMO_CONFIG)
    for enc, name in ((cfg.model.backbone.master, 'dinov3'), (cfg.model.backbone.auxiliary, 'sam2')):
        enc.arch = demo.SMOKE_ARCH[name]
    cfg.model.backbone.master.pyramid = dict(type='paper', project=False)
    from mmfusion.registry import MODELS
    channels = MODELS.build(copy.deepcopy(cfg.model.backbone.to_dict())).out_channels
    cfg.model.decode_head.update(in_channels=list(channels), num_queries=10)
    cfg.model.decode_head.transformer_decoder.num_layers = 1
    set_test_size(cfg, SIZE)
    config = str(folder / 'demo_smoke.py')
    cfg.dump(config)
    ckpt = save_checkpoint(config, str(folder / 'demo.pth'), seed=1)
    return config, ckpt, str(folder)


def test_demo_model_same_pred_files_through_both_tools(demo_model, export_tool, infer_tool, tmp_path, capsys):
    config, ckpt, folder = demo_model
    onnx_file = osp.join(folder, 'demo.onnx')
    export_tool.main([config, ckpt, '--out', onnx_file])
    images = tmp_path / 'imgs'
    images.mkdir()
    for i in range(3):
        write_image(images / f'img{i}.png', seed=i)
    (images / 'broken.jpg').write_bytes(b'not an image')
    res_pt = load_tool('infer.py').main([config, ckpt, str(images), '--out-dir', str(tmp_path / 'pt')])
    res_ort = infer_tool.main([config, onnx_file, str(images), '--out-dir', str(tmp_path / 'ort')])
    assert res_pt['skipped'] == res_ort['skipped'] and len(res_ort['skipped']) == 1
    for sub in ('vis', 'pred'):
        names = sorted(p.name for p in (tmp_path / 'pt' / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / 'ort' / sub).iterdir()) and len(names) == 3, sub
    classes = set()
    for name in sorted(p.name for p in (tmp_path / 'pt' / 'pred').iterdir()):
        a = cv2.imread(str(tmp_path / 'pt' / 'pred' / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / 'ort' / 'pred' / name), cv2.IMREAD_UNCHANGED)
        assert a.shape == b.shape == SIZE and (a == b).mean() >= 0.999
        classes |= set(np.unique(a).tolist())
    assert len(classes) > 1  # maps with something to disagree on
    assert (tmp_path / 'ort' / '.mmfusion-infer').is_file()
    assert 'wrote overlays of 3 image(s)' in capsys.readouterr().out


def test_instance_result_files_through_both_tools(exported, infer_tool, tmp_path):
    """mmdet's files: preds/<name>.json (labels, scores, boxes, RLE masks) and vis/ overlays, from both tools."""
    import json

    from pycocotools import mask as mask_utils
    config, ckpt, path, _ = exported('instance')
    image = write_image(tmp_path / 'street.png', seed=2)
    load_tool('infer.py').main([config, ckpt, image, '--out-dir', str(tmp_path / 'pt')])
    infer_tool.main([config, path, image, '--out-dir', str(tmp_path / 'ort')])
    for sub in ('vis', 'preds'):
        assert sorted(p.name for p in (tmp_path / 'pt' / sub).iterdir()) == \
            sorted(p.name for p in (tmp_path / 'ort' / sub).iterdir()), sub
    a, b = (json.loads((tmp_path / side / 'preds' / 'street.json').read_text()) for side in ('pt', 'ort'))
    assert a['labels'] == b['labels'] and len(a['labels']) == 5
    assert np.allclose(a['scores'], b['scores'], atol=1e-4)
    masks_a, masks_b = (mask_utils.decode(r['masks']).transpose(2, 0, 1) for r in (a, b))
    for ma, mb in zip(masks_a, masks_b):
        union = (ma | mb).sum()
        assert union == 0 or (ma & mb).sum() / union >= 0.99


def test_onnx_infer_one_image_and_a_video(exported, infer_tool, tmp_path, capsys):
    config, _, path, _ = exported('semantic')
    infer_tool.main([config, path, write_image(tmp_path / 'one.png'), '--out-dir', str(tmp_path / 'one')])
    assert 'wrote overlays of 1 image(s)' in capsys.readouterr().out
    assert (tmp_path / 'one' / 'vis' / 'one.png').is_file()
    assert (tmp_path / 'one' / 'pred' / '00000000_pred.png').is_file()
    video = str(tmp_path / 'clip.mp4')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 5, SIZE[::-1])
    for i in range(2):
        writer.write(cv2.imread(write_image(tmp_path / f'f{i}.png', seed=i)))
    writer.release()
    assert infer_tool.main([config, path, video, '--out-dir', str(tmp_path / 'out')])['frames'] == 2
    cap = cv2.VideoCapture(str(tmp_path / 'out' / 'clip_overlay.mp4'))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2


# --- bad inputs: one line ``error: <problem>; <fix>``, exit status 2, nothing written (docs/bad_inputs.md) -------


def _one_line(capsys, call):
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith('error: ') and 'Traceback' not in '\n'.join(err)
    return err[-1]


@pytest.fixture
def bad(tmp_path):
    """A folder with an image, a checkpoint-shaped file that is not one, a corrupt .onnx and a foreign .onnx."""
    from onnx import TensorProto, helper
    write_image(tmp_path / 'a.png')
    (tmp_path / 'not_a_checkpoint.pth').write_bytes(b'this is no checkpoint')
    (tmp_path / 'corrupt.onnx').write_bytes(b'\x08\x07garbage' * 10)
    graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'g',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / 'foreign.onnx'))
    return tmp_path


def test_export_bad_inputs(exported, export_tool, bad, capsys):
    config, ckpt, path, _ = exported('semantic')
    out = str(bad / 'm.onnx')

    def run(*args):
        return _one_line(capsys, lambda: export_tool.main(list(args)))

    assert run(config, str(bad / 'none.pth'), '--out', out) == \
        f'error: checkpoint not found: {bad / "none.pth"}; pass the .pth written by tools/train.py'
    assert run(config, str(bad / 'not_a_checkpoint.pth'), '--out', out) == \
        f'error: checkpoint {bad / "not_a_checkpoint.pth"} is not a PyTorch checkpoint; pass a .pth written by ' \
        'tools/train.py'
    assert run(config, ckpt, '--out', path) == \
        f'error: {path} already exists; pass --out a new file name, or --overwrite to replace it (nothing was ' \
        'overwritten)'
    assert run(config, ckpt, '--out', str(bad / 'm.bin')) == f'error: --out {bad / "m.bin"} must end with .onnx'
    (bad / 'w.onnx.data').write_bytes(b'somebody else\'s weights')
    assert run(config, ckpt, '--out', str(bad / 'w.onnx')) == \
        f'error: {bad / "w.onnx.data"} already exists; pass --out a new file name, or --overwrite to replace it ' \
        '(nothing was overwritten)'
    (bad / 'w.onnx.data').unlink()
    assert run(config, ckpt, '--out', out, '--cfg-options', 'model.decode_head.type=FCNHead') == \
        f'error: {config}: model EncoderDecoder with decode head FCNHead is not supported for ONNX export; ' \
        'tools/deployment/ exports Mask2Former models: mmseg EncoderDecoder + Mask2FormerHead (semantic) or mmdet ' \
        'Mask2Former (instance, panoptic)'
    assert run(config, ckpt, '--out', out, '--cfg-options', 'model.test_cfg.mode=slide').startswith(
        f"error: {config}: model.test_cfg.mode='slide' is not supported for ONNX export")
    assert run(config, ckpt, '--out', out, '--opset', '15') == \
        'error: --opset 15: multi-scale deformable attention needs GridSample, which ONNX has from opset 16; pass ' \
        '--opset 16 or higher (default 17)'
    assert run(config, ckpt, '--out', out, '--cfg-options', 'model.backbone.aux_dtype=qint8').startswith(
        f"error: {config}: model.backbone.aux_dtype='qint8' runs PyTorch's own int8 kernels")
    assert not osp.exists(out) and not osp.exists(bad / 'm.bin')
    assert sorted(p.name for p in bad.iterdir()) == ['a.png', 'corrupt.onnx', 'foreign.onnx', 'not_a_checkpoint.pth']


def test_onnx_infer_bad_inputs(exported, infer_tool, bad, tmp_path_factory, capsys):
    config, _, path, _ = exported('semantic')
    inst_config = tiny_config('instance', str(tmp_path_factory.mktemp('inst_cfg')))
    image, out = str(bad / 'a.png'), str(bad / 'out')

    def run(*args):
        return _one_line(capsys, lambda: infer_tool.main(list(args)))

    assert run(config, str(bad / 'none.onnx'), image, '--out-dir', out) == \
        f'error: ONNX file not found: {bad / "none.onnx"}; export one with tools/deployment/pytorch2onnx.py'
    assert run(config, str(bad / 'corrupt.onnx'), image, '--out-dir', out).startswith(
        f'error: cannot read {bad / "corrupt.onnx"} as an ONNX model (')
    assert run(config, str(bad / 'foreign.onnx'), image, '--out-dir', out) == \
        f"error: {bad / 'foreign.onnx'} has no mmfusion export record (metadata 'mmfusion'): it was not written by " \
        'tools/deployment/pytorch2onnx.py; export the model with it'
    assert run(inst_config, path, image, '--out-dir', out) == \
        f'error: {path} was exported for semantic segmentation, but {inst_config} is a config for instance ' \
        f'segmentation; pass the config it was exported from ({config})'
    assert run(config, path, image, '--out-dir', out, '--cfg-options', 'model.data_preprocessor.mean=[0,0,0]') == \
        f'error: {config} prepares images otherwise than the model {path} was exported from ' \
        '(model.data_preprocessor mean: [123.675, 116.28, 103.53] at export); pass the config it was exported from ' \
        f'({config})'
    assert run(config, path, image, '--out-dir', out, '--device', 'cuda').startswith(
        'error: --device cuda: this onnxruntime has no CUDA execution provider (available: ')
    square = write_image(bad / 'square.png', size=(64, 64))  # Resize keeps it 64x64: not the graph's 64x128
    assert run(config, path, square, '--out-dir', out) == \
        f'error: {square} reaches the model as 64x64 px, but {path} was exported with a static input size of ' \
        '64x128 px; export it again with --shape 64 64 for this size'
    assert run(config, path, str(bad / 'none.png'), '--out-dir', out) == \
        f'error: input not found: {bad / "none.png"}; pass an image, a folder of images or a video'
    user = bad / 'mine'
    user.mkdir()
    (user / 'notes.txt').write_text('mine')
    assert run(config, path, image, '--out-dir', str(user)) == \
        f'error: --out-dir {user} is a folder that mmfusion did not create (no .mmfusion-infer in it) and it is not ' \
        'empty; pass --out-dir a new or empty folder (nothing was changed)'
    assert [p.name for p in user.iterdir()] == ['notes.txt']
