"""FSDP for the fused model (configs/fsdp/mask2former_d3s2_fsdp_cityscapes.py): 2 CPU processes (torchrun, gloo).

The flagship config, shrunk (tiny DINOv3 master + tiny frozen SAM2 auxiliary, real architectures, tiny head and
data), is trained for 3 iterations by ``tools/train.py`` twice from the same initial weights: with DDP (MMEngine's
Runner) and with the shipped FSDP strategy (FlexibleRunner + FSDPStrategy, full sharding), whose master is built as
the 7B config builds it (meta device, weights from its checkpoint in init_weights, activation checkpointing). The FSDP
run is then resumed from its iteration-2 checkpoint. ``fsdp_run.py`` reseeds every generator with
``seed + iteration`` and the augmentations are made deterministic, so that all runs draw the same numbers at the same
iteration and their logged losses can be compared. The FSDP run also has mmfusion's SCEFHook on (probing before
training and at iteration 2): every rank takes part in the probe's forward, rank 0 writes, and training goes on
exactly as in the DDP run without the hook.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import mmfusion.registry  # noqa: F401  (compat fixes and registries, before anything builds)
from tests._tools import free_port
from tests.test_models.test_backbones.vfm_utils import hf_dinov3, hf_to_meta
from tests.test_tools.test_train_test_tools import tiny_flagship

pytestmark = pytest.mark.slow  # three 2-process training runs (about a minute of CPU)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FSDP_CONFIG = osp.join(ROOT, 'configs', 'fsdp', 'mask2former_d3s2_fsdp_cityscapes.py')
MAX_ITERS = 3
# SCEFHook in the FSDP run: probes before training and after iteration 2, on these two images.
SCEF = dict(type='mmfusion.SCEFHook', interval=2, num_probes=2, probe_size=(96, 192))  # OS16 maps of 6x12
# DDP averages gradients with one all-reduce, FSDP with a reduce-scatter (other summation order). Iteration 1 runs
# the same weights: only that rounding differs (measured 1e-7 relative). Later iterations run weights that AdamW
# moved with clipped gradients (norm 0.01), where its m / sqrt(v) update turns rounding-sized differences of
# near-zero gradient entries into lr-sized steps: measured up to 8e-4 relative (loss_dice, iteration 2).
RTOL_FIRST = 1e-5
RTOL = 2e-3


def _tiny_configs(data_root: str, out: str) -> tuple:
    """The shrunk flagship as a DDP config and as the shipped FSDP config (its runner and strategy), without
    augmentation randomness, checkpoints at iterations 2 and 3, no validation (``fsdp_run.py`` gives both the same
    initial weights)."""
    ddp_path = tiny_flagship(data_root, osp.join(out, 'tiny_ddp.py'), max_iters=MAX_ITERS)
    cfg = Config.fromfile(ddp_path)
    pipeline = cfg.train_dataloader.dataset.pipeline
    for step in pipeline:
        if step.type == 'RandomFlip':
            step.prob = 0.0
        elif step.type == 'RandomResize':
            step.ratio_range = (1.0, 1.0)
        elif step.type == 'RandomCrop':
            step.crop_size = (256, 128)  # the whole (resized) image: the crop offset is always 0
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.optim_wrapper.type = 'OptimWrapper'  # float32: the recipe's AMP needs a GPU
    cfg.custom_hooks = [dict(type='ReseedPerIterHook', seed=0)]
    cfg.randomness = dict(seed=0)
    cfg.dump(ddp_path)

    shipped = Config.fromfile(FSDP_CONFIG)
    cfg.runner_type = shipped.runner_type
    cfg.strategy = shipped.strategy
    cfg.custom_imports = shipped.custom_imports
    # As the 7B config builds its master: on the meta device, given its checkpoint by init_weights, blocks checkpointed
    # (load_from then sets the DDP run's initial weights).
    pretrained = osp.join(out, 'dinov3_tiny.pth')
    torch.save(hf_to_meta(hf_dinov3(seed=1)), pretrained)
    cfg.model.backbone.master.update(init_device='meta', checkpoint=pretrained, with_cp=True)
    cfg.custom_hooks = cfg.custom_hooks + [dict(SCEF, probe_images=_probe_images(osp.join(out, 'probes')))]
    fsdp_path = osp.join(out, 'tiny_fsdp.py')
    cfg.dump(fsdp_path)
    return ddp_path, fsdp_path


def _probe_images(folder: str) -> str:
    """Two scenes with edges (a bright rectangle on noise), as PNG files."""
    from PIL import Image
    os.makedirs(folder)
    gen = torch.Generator().manual_seed(0)
    for i in range(2):
        img = torch.randint(0, 80, (80, 160, 3), dtype=torch.uint8, generator=gen)
        img[16 + 8 * i:56, 30:120 - 10 * i] += 150
        Image.fromarray(img.numpy()).save(osp.join(folder, f'probe{i}.png'))
    return folder


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    from mmfusion.datasets.synthetic_cityscapes import generate_synthetic_cityscapes
    out = str(tmp_path_factory.mktemp('fsdp'))
    data_root = osp.join(out, 'cityscapes')
    # 12 images: the 3 iterations (2 ranks x 2 images) stay in one epoch; MMEngine sleeps 2 s at each new epoch.
    generate_synthetic_cityscapes(data_root, num_train=12, num_val=1, height=128, width=256, seed=3, panoptic=False)
    ddp_cfg, fsdp_cfg = _tiny_configs(data_root, out)
    work = osp.join(out, 'work')
    os.makedirs(work)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    # What tools/dist_train.sh runs (torch.distributed.run, --launcher pytorch), with the three runs in one launch.
    res = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()),
         osp.join(ROOT, 'tests', 'test_engine', 'fsdp_run.py'), ddp_cfg, fsdp_cfg, work],
        capture_output=True, text=True, env=env, timeout=900, cwd=out)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-6000:]
    with open(osp.join(work, 'rank0.json')) as f:
        facts = json.load(f)
    with open(osp.join(work, 'rank1.json')) as f:
        facts1 = json.load(f)
    return dict(work=work, facts=facts, facts1=facts1, ddp_cfg=ddp_cfg, probes=osp.join(out, 'probes'))


def _scalars(work_dir: str) -> dict:
    """Per-iteration training scalars from MMEngine's JSON log (``<timestamp>/vis_data/scalars.json``)."""
    files = [osp.join(r, f) for r, _, fs in os.walk(work_dir) for f in fs if f == 'scalars.json']
    assert len(files) == 1, files
    with open(files[0]) as f:
        rows = [json.loads(line) for line in f]
    return {row['iter']: row for row in rows if 'loss' in row}


def _name(param_name: str) -> str:
    return param_name.replace('_fsdp_wrapped_module.', '').removeprefix('module.')


def test_fsdp_losses_match_ddp(runs):
    ddp, fsdp = _scalars(osp.join(runs['work'], 'ddp')), _scalars(osp.join(runs['work'], 'fsdp'))
    assert sorted(ddp) == sorted(fsdp) == list(range(1, MAX_ITERS + 1))
    for it in ddp:
        losses = [k for k in ddp[it] if 'loss' in k]
        assert len(losses) > 3
        for key in losses:
            assert fsdp[it][key] == pytest.approx(ddp[it][key], rel=RTOL_FIRST if it == 1 else RTOL), (it, key)
    # the runs moved: a later iteration's loss is not the first one's
    assert ddp[MAX_ITERS]['loss'] != pytest.approx(ddp[1]['loss'], rel=RTOL)


def test_fsdp_clips_by_the_global_gradient_norm(runs):
    """The recipe clips at L2 norm 0.01; under FSDP the norm must be the whole gradient's, not a rank's shard's."""
    ddp, fsdp = _scalars(osp.join(runs['work'], 'ddp')), _scalars(osp.join(runs['work'], 'fsdp'))
    for it in ddp:
        assert ddp[it]['grad_norm'] > 0.01  # clipping is active
        assert fsdp[it]['grad_norm'] == pytest.approx(ddp[it]['grad_norm'], rel=RTOL_FIRST if it == 1 else RTOL), it


def test_fsdp_units_are_master_blocks_and_frozen_auxiliary(runs):
    facts = runs['facts']['fsdp']
    assert facts['wrapper'] == 'MMFullyShardedDataParallel'
    assert sorted(facts['units']) == sorted(['Mask2Former', 'SAM2Hiera'] + ['DINOv3ViTLayer'] * 3)
    assert runs['facts']['ddp']['wrapper'] == 'MMDistributedDataParallel'


def test_fsdp_run_materialised_the_meta_master_and_checkpoints_its_blocks(runs):
    facts = runs['facts']['fsdp']
    assert facts['meta_tensors'] == 0
    assert facts['checkpointed_blocks'] == 3
    assert runs['facts']['ddp']['checkpointed_blocks'] == 0


def test_fsdp_optimizer_groups_follow_the_fusion_constructor(runs):
    """use_orig_params keeps names and requires_grad: frozen parameters stay out, every trainable one is in, and
    each gets the weight decay it gets under DDP (0 on norms and embeddings)."""
    ddp, fsdp = runs['facts']['ddp'], runs['facts']['fsdp']
    assert fsdp['num_frozen'] == ddp['num_frozen'] > 0
    assert fsdp['frozen_in_optimizer'] == [] and fsdp['trainable_not_in_optimizer'] == []
    expected = {_name(k): v for k, v in ddp['weight_decay'].items()}
    assert {_name(k): v for k, v in fsdp['weight_decay'].items()} == expected
    assert 0.0 in expected.values() and 0.05 in expected.values()


def test_fsdp_checkpoint_has_the_ddp_layout(runs):
    """'full' state dicts: one ordinary checkpoint on rank 0, readable by tools/test.py like a DDP one."""
    fsdp = torch.load(osp.join(runs['work'], 'fsdp', 'iter_2.pth'), map_location='cpu', weights_only=True)
    ddp = torch.load(osp.join(runs['work'], 'ddp', 'iter_2.pth'), map_location='cpu', weights_only=True)
    assert fsdp['meta']['iter'] == 2
    assert {k: tuple(v.shape) for k, v in fsdp['state_dict'].items()} == \
        {k: tuple(v.shape) for k, v in ddp['state_dict'].items()}
    for key, value in ddp['state_dict'].items():
        torch.testing.assert_close(fsdp['state_dict'][key], value, rtol=1e-3, atol=1e-5, msg=key)


def test_fsdp_resume_continues_the_run(runs):
    """Resuming from iteration 2 restores weights, optimizer and scheduler: iteration 3 repeats the uninterrupted
    run's."""
    assert runs['facts']['resumed']['iter'] == MAX_ITERS
    straight = _scalars(osp.join(runs['work'], 'fsdp'))
    resumed = _scalars(osp.join(runs['work'], 'resumed'))
    assert sorted(resumed) == [MAX_ITERS]
    for key in ('loss', 'grad_norm', 'lr', 'base_lr'):
        assert resumed[MAX_ITERS][key] == pytest.approx(straight[MAX_ITERS][key], rel=RTOL), key


def test_scef_probe_under_fsdp_matches_a_single_process_probe(runs):
    """Under FSDP each unit gathers its weights from every rank in its forward: both ranks run the probe's forward
    (through the FSDP root, which gathers the root unit's own parameters), rank 0 writes. Its profile of the
    iteration-2 weights equals the one a single process computes from the iteration-2 checkpoint."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from mmfusion.engine.hooks import SCEFHook
    scef = osp.join(runs['work'], 'fsdp', 'scef')
    assert sorted(os.listdir(scef)) == ['iter_0.json', 'iter_2.json']
    # both ranks read the probes (rank 1 took part in the forward), as training went on identically (see above)
    assert runs['facts']['fsdp']['scef_probes'] == runs['facts1']['fsdp']['scef_probes'] == [2, 3, 96, 192]
    with open(osp.join(scef, 'iter_2.json')) as f:
        written = json.load(f)
    assert written['meta']['iter'] == 2 and written['selection']['inject_stride'] == 16

    register_all_modules()
    model = MODELS.build(Config.fromfile(runs['ddp_cfg']).model)
    state = torch.load(osp.join(runs['work'], 'fsdp', 'iter_2.pth'), map_location='cpu', weights_only=True)
    model.load_state_dict(state['state_dict'])
    hook = SCEFHook(probe_images=runs['probes'], num_probes=2, probe_size=SCEF['probe_size'], interval=2)
    model.eval()
    with torch.no_grad():
        expected = hook._profile(model, hook._get_probes(None, model))
    assert set(written['encoders']) == set(expected) == {'master', 'auxiliary', 'fused'}
    for name, per_stride in expected.items():
        entry = written['encoders'][name]
        assert entry['strides'] == sorted(per_stride)
        for metric in ('SC', 'EF', 'SFC', 'SCS'):
            got = dict(zip(entry['strides'], entry[metric]))
            for stride, values in per_stride.items():
                assert got[stride] == pytest.approx(values[metric], rel=1e-4, abs=1e-6), (name, stride, metric)
    assert expected['auxiliary'][16]['EF'] > 0 and expected['master'][4]['SC'] > 0  # not a profile of empty maps


def test_encoders_found_once_through_the_fsdp_wrappers(runs):
    """The normalisation check finds the encoders by their input_mean/input_std, not twice through an FSDP unit
    (whose wrapper forwards attributes), named without FSDP's levels."""
    assert runs['facts']['fsdp']['encoders'] == runs['facts']['ddp']['encoders'] == \
        ['model.backbone.master', 'model.backbone.auxiliary']
