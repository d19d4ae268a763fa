"""mmfusion.apis.runner_utils: the one-line guard, config-key and data checks, and the checkpoint-fit check."""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from torch import nn

from mmfusion.apis.checkpoint_fit import checkpoint_mismatch
from mmfusion.apis.runner_utils import check_cfg_options, check_data, claim_metric_outputs, run_tool
from mmfusion.utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

class _Net(nn.Module):
    """100 parameter tensors: 50 linear layers 2->2 (weight + bias)."""

    def __init__(self, width: int = 2, layers: int = 50) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))


# --- run_tool ---------------------------------------------------------------------------------------------------


def _fails_with(exc):
    def main(argv):
        raise exc
    return main


def test_run_tool_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        run_tool(_fails_with(UserError('data folder not found: x;\n  make it')), [])
    assert info.value.code == 2
    assert capsys.readouterr().err == 'error: data folder not found: x; make it\n'


def test_run_tool_names_the_program_when_asked(capsys):
    with pytest.raises(SystemExit):
        run_tool(_fails_with(FileNotFoundError('no weights')), [], prog='tool.py')
    assert capsys.readouterr().err == 'tool.py: error: no weights\n'


def test_run_tool_keeps_the_traceback_with_debug(monkeypatch):
    with pytest.raises(UserError, match='bad'):
        run_tool(_fails_with(UserError('bad')), ['--debug'])
    monkeypatch.setenv('MMFUSION_DEBUG', '1')
    with pytest.raises(UserError, match='bad'):
        run_tool(_fails_with(UserError('bad')), [])


def test_run_tool_lets_a_bug_through():
    with pytest.raises(ZeroDivisionError):
        run_tool(_fails_with(ZeroDivisionError('bug')), [])


def test_run_tool_returns_what_main_returns():
    assert run_tool(lambda argv: argv + ['ok'], ['a']) == ['a', 'ok']


# --- --cfg-options ----------------------------------------------------------------------------------------------


def _cfg():
    return Config(dict(model=dict(neck=dict(type='N', out=4), backbone=dict(type='B')),
                       test_evaluator=[dict(type='M', ann_file='a.json')], train_cfg=dict(max_iters=10)))


def test_cfg_option_with_a_misspelt_parent_is_refused_with_a_suggestion():
    with pytest.raises(UserError, match=r'^--cfg-options model.nekc.out: the config has no model.nekc \(did you mean '
                       r'model.neck\?\); fix the key$'):
        check_cfg_options(_cfg(), {'model.nekc.out': 8})


def test_cfg_option_list_index_out_of_range_is_refused():
    with pytest.raises(UserError, match=r'test_evaluator is a list of 1; use an index 0..0'):
        check_cfg_options(_cfg(), {'test_evaluator.3.ann_file': 'b.json'})


def test_cfg_option_below_a_value_is_refused():
    with pytest.raises(UserError, match='train_cfg.max_iters is 10, not a dict or a list'):
        check_cfg_options(_cfg(), {'train_cfg.max_iters.x': 1})


def test_cfg_option_new_leaf_is_accepted_with_a_note(capsys):
    check_cfg_options(_cfg(), {'model.neck.new_arg': 1, 'test_evaluator.0.ann_file': 'b.json'})
    err = capsys.readouterr().err
    assert err == 'note: --cfg-options model.neck.new_arg adds a key the config does not have\n'


# --- data -------------------------------------------------------------------------------------------------------


def _data_cfg(root):
    ds = dict(type='CityscapesDataset', data_root=root, ann_file='annotations/instancesonly_filtered_gtFine_val.json',
              data_prefix=dict(img='leftImg8bit/val/'))
    return Config(dict(test_dataloader=dict(dataset=ds),
                       test_evaluator=[dict(type='CocoMetric', ann_file=root + 'annotations/'
                                            'instancesonly_filtered_gtFine_val.json')]))


def test_missing_data_root_names_it_and_how_to_get_one(tmp_path):
    root = str(tmp_path / 'cityscapes') + '/'
    with pytest.raises(UserError, match=r'data folder not found: .*cityscapes/ \(test_dataloader.dataset.data_root\);'
                       r'.*make_synthetic_cityscapes.py'):
        check_data(_data_cfg(root), 'test')


def test_missing_annotation_file_names_the_converter(tmp_path):
    (tmp_path / 'leftImg8bit' / 'val').mkdir(parents=True)
    with pytest.raises(UserError, match=r'annotation file not found: .*instancesonly_filtered_gtFine_val.json '
                       r'\(test_dataloader.dataset.ann_file\); create it with: python '
                       r'tools/dataset_converters/cityscapes.py'):
        check_data(_data_cfg(str(tmp_path) + '/'), 'test')


def test_missing_image_folder_is_named(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'instancesonly_filtered_gtFine_val.json').write_text('{}')
    with pytest.raises(UserError, match=r'data folder not found: .*leftImg8bit/val/ '
                       r'\(test_dataloader.dataset.data_prefix.img\)'):
        check_data(_data_cfg(str(tmp_path) + '/'), 'test')


def test_missing_train_ids_pngs_name_the_converter(tmp_path):
    (tmp_path / 'gtFine' / 'train' / 'a').mkdir(parents=True)
    (tmp_path / 'gtFine' / 'train' / 'a' / 'x_gtFine_labelIds.png').write_bytes(b'')
    (tmp_path / 'leftImg8bit' / 'train').mkdir(parents=True)
    ds = dict(type='CityscapesDataset', data_root=str(tmp_path), seg_map_suffix='_gtFine_labelTrainIds.png',
              data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'))
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=ds))))
    with pytest.raises(UserError, match=r'no \*_gtFine_labelTrainIds.png file under .*gtFine/train '
                       r'\(train_dataloader.dataset.dataset.seg_map_suffix\); create it with: .*cityscapes.py'):
        check_data(cfg, 'train')


def test_complete_data_passes(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'instancesonly_filtered_gtFine_val.json').write_text('{}')
    (tmp_path / 'leftImg8bit' / 'val').mkdir(parents=True)
    assert check_data(_data_cfg(str(tmp_path) + '/'), 'test') is None


def test_folders_that_metrics_clear_are_claimed(tmp_path):
    cfg = Config(dict(test_evaluator=[dict(type='CocoMetric', ann_file='a.json'),
                                      dict(type='CityScapesMetric', outfile_prefix=str(tmp_path / 'cs'))]))
    claim_metric_outputs(cfg, 'test')
    assert sorted(p.name for p in (tmp_path / 'cs').iterdir()) == ['.mmfusion-metric-output']
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'results').mkdir()
    cfg.test_evaluator[1].outfile_prefix = str(tmp_path / 'mine')
    with pytest.raises(UserError, match=r'--cfg-options test_evaluator.1.outfile_prefix .*mine is a folder that '
                       'mmfusion did not create'):
        claim_metric_outputs(cfg, 'test')


# --- checkpoint fit ---------------------------------------------------------------------------------------------


def test_checkpoint_of_the_same_model_fits():
    assert checkpoint_mismatch(_Net(), {'state_dict': _Net().state_dict()}) == (None, None)


def test_checkpoint_with_other_shapes_is_refused():
    refusal, _ = checkpoint_mismatch(_Net(width=2), {'state_dict': _Net(width=3).state_dict()})
    assert refusal.startswith('100 of 100 weights have another shape (checkpoint vs model: '
                              'layers.0.weight (3, 3) vs (2, 2), layers.0.bias (3,) vs (2,), ')


def test_one_missing_weight_in_a_hundred_is_refused():
    """Loading is exact: no share of missing weights is tolerated (it was 1 %, which let 3 random alignment tensors
    through)."""
    state = _Net().state_dict()
    del state['layers.7.bias']
    refusal, warning = checkpoint_mismatch(_Net(), state)  # a bare state dict is accepted too
    assert refusal == "1 of the model's 100 weights are missing from it (layers.7.bias)" and warning is None


def test_unknown_checkpoint_weights_only_warn_naming_them():
    state = dict(_Net().state_dict(), **{'extra.weight': torch.zeros(1), 'old.bias': torch.zeros(1)})
    refusal, warning = checkpoint_mismatch(_Net(), state)
    assert refusal is None
    assert warning == '2 checkpoint weights are unknown to the model (extra.weight, old.bias)'


def test_refuse_mismatch_names_the_missing_keys_and_the_model_key_that_changed(capsys):
    """The likely cause comes from the config MMEngine saves in every checkpoint (meta.cfg)."""
    from mmfusion.apis.checkpoint_fit import refuse_mismatch
    state = _Net().state_dict()
    del state['layers.3.weight']
    saved = Config(dict(model=dict(type='Net', layers=50, align='mean_pad'))).pretty_text
    ckpt = dict(state_dict=state, meta=dict(cfg=saved))
    with pytest.raises(UserError) as info:
        refuse_mismatch(_Net(), ckpt, 'a.pth', 'b.py', model_cfg=dict(type='Net', layers=50, align='conv'))
    assert str(info.value) == (
        "checkpoint a.pth does not fit the model of b.py: 1 of the model's 100 weights are missing from it "
        "(layers.3.weight); likely cause: model.align is 'conv' here but 'mean_pad' in the checkpoint's config; "
        'this checkpoint was not trained with this config: pass the config it was trained with (for a fine-tuning '
        'load_from that is meant to be partial: tools/train.py --partial-load (or partial_load = True in the '
        'config))')
    # Explicitly partial (fine-tuning): loaded, with a note naming what stays at its initial value.
    fit = refuse_mismatch(_Net(), ckpt, 'a.pth', 'b.py', partial=True)
    assert fit.missing == ['layers.3.weight']
    assert capsys.readouterr().err == ("note: partial load (partial_load=True) of checkpoint a.pth: 1 of the model's "
                                       '100 weights are missing from it (layers.3.weight); those weights keep their '
                                       'initial values\n')


def test_checkpoint_of_another_model_lists_missing_and_unknown_keys():
    other = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)).state_dict()
    refusal, _ = checkpoint_mismatch(_Net(layers=2), other)
    assert refusal == ("4 of the model's 4 weights are missing from it (layers.0.weight, layers.0.bias, "
                       'layers.1.weight, ...); '
                       '4 checkpoint weights are unknown to the model (0.weight, 0.bias, 1.weight, ...)')


def test_checkpoint_from_a_wrapped_model_fits():
    state = {'module.' + k: v for k, v in _Net().state_dict().items()}
    assert checkpoint_mismatch(_Net(), {'state_dict': state}) == (None, None)


def test_tool_failure_reaches_stderr_as_one_line_without_traceback(tmp_path):
    """Through a real interpreter: the line and exit status a shell sees."""
    code = ('from mmfusion.apis.runner_utils import run_tool\n'
            'from mmfusion.utils.errors import UserError\n'
            'def main(argv): raise UserError("config file not found: x.py; pass an existing config")\n'
            'run_tool(main)\n')
    env = dict(os.environ, MMFUSION_DEBUG='0', PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=120)
    assert res.returncode == 2
    assert res.stderr == 'error: config file not found: x.py; pass an existing config\n'


def test_relative_output_paths_of_a_config_resolve_under_the_work_dir(tmp_path, monkeypatch):
    """The Cityscapes metric's relative outfile_prefix and mmseg's relative --show-dir land in the work dir, not in
    the current directory."""
    from mmfusion.apis.runner_utils import enable_visualization
    monkeypatch.chdir(tmp_path)
    work = str(tmp_path / 'work')
    cfg = Config(dict(work_dir=work, test_evaluator=[
        dict(type='CityScapesMetric', outfile_prefix='./work_dirs/cityscapes_metric/instance')]))
    claim_metric_outputs(cfg, 'test')
    assert cfg.test_evaluator[0].outfile_prefix == f'{work}/work_dirs/cityscapes_metric/instance'
    assert os.path.isfile(f'{work}/work_dirs/cityscapes_metric/instance/.mmfusion-metric-output')
    assert not (tmp_path / 'work_dirs').exists()
    seg = Config(dict(work_dir=work, default_scope='mmseg', visualizer=dict(type='SegLocalVisualizer'),
                      default_hooks=dict(visualization=dict(type='SegVisualizationHook'))))
    enable_visualization(seg, False, 'vis')
    assert seg.visualizer.save_dir == f'{work}/vis' and os.path.isdir(f'{work}/vis') and not (tmp_path / 'vis').exists()


def test_a_disk_full_error_is_one_line(capsys):
    import errno

    def main(argv):
        raise OSError(errno.ENOSPC, 'No space left on device', '/w/scef/iter_4.json')

    with pytest.raises(SystemExit) as info:
        run_tool(main, [])
    assert info.value.code == 2
    assert capsys.readouterr().err == ('error: no space left on the disk while writing /w/scef/iter_4.json; free space '
                                       'and run the command again (a training continues from its last checkpoint '
                                       'with --resume)\n')


def test_amp_flag_changes_a_float32_config_and_is_refused_where_it_would_do_nothing(monkeypatch):
    """--amp: the paper configs train with AMP already (refused: the flag would change nothing); a stock-schedule
    config becomes AmpOptimWrapper with a GPU, and without one the flag is refused with the fix."""
    import mmfusion.apis.runner_utils as ru
    configs = os.path.join(ROOT, 'configs')
    paper = Config.fromfile(os.path.join(configs, 'mask2former_d3s2_cityscapes.py'))
    with pytest.raises(UserError, match="already trains with AMP .*drop --amp"):
        ru.enable_amp(paper)
    stock = Config.fromfile(os.path.join(configs, 'mask2former_d3s2_8xb2-90k_cityscapes.py'))
    monkeypatch.setattr(ru, '_accelerator_available', lambda: False)
    with pytest.raises(UserError, match='--amp needs a GPU'):
        ru.enable_amp(stock)
    monkeypatch.setattr(ru, '_accelerator_available', lambda: True)
    ru.enable_amp(stock)
    assert (stock.optim_wrapper.type, stock.optim_wrapper.loss_scale) == ('AmpOptimWrapper', 'dynamic')


def test_scef_interval_beyond_the_run_is_noted(capsys):
    from mmfusion.apis.runner_utils import check_hooks
    cfg = Config(dict(train_cfg=dict(max_iters=8), custom_hooks=[dict(type='mmfusion.SCEFHook', interval=1000)]))
    check_hooks(cfg, 'train')
    assert capsys.readouterr().err == ('note: custom_hooks.0 (SCEFHook) interval=1000 is larger than '
                                       'train_cfg.max_iters=8: only the iteration-0 probe will run\n')
    cfg.custom_hooks[0].interval = 4  # reached: nothing to say
    check_hooks(cfg, 'train')
    assert capsys.readouterr().err == ''


def test_resume_in_a_work_dir_without_checkpoints_says_so_and_starts_at_zero(tmp_path, capsys):
    from mmfusion.apis.runner_utils import planned_checkpoint
    cfg = Config(dict(work_dir=str(tmp_path), resume=True, load_from=None))
    assert planned_checkpoint(cfg, 'train') is None and cfg.resume is False
    assert capsys.readouterr().err == f'note: no checkpoint in {tmp_path}, starting from iteration 0\n'
    torch.save({'state_dict': {}}, tmp_path / 'iter_6.pth')
    torch.save({'state_dict': {}}, tmp_path / 'iter_10.pth')
    cfg = Config(dict(work_dir=str(tmp_path), resume=True, load_from=None))
    assert planned_checkpoint(cfg, 'train') == str(tmp_path / 'iter_10.pth') == cfg.load_from  # newest, by number


def test_the_config_saved_in_a_checkpoint_is_read_not_executed(tmp_path):
    """meta.cfg comes from the file: naming the likely cause must not run code a checkpoint carries."""
    from mmfusion.apis.checkpoint_fit import likely_cause
    marker = tmp_path / 'ran'
    text = (f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
            f"model = dict(type='Net', align=pathlib.Path({str(marker)!r}).touch(), layers=[dict(w=2)])\n")
    cause = likely_cause(dict(type='Net', align='conv', layers=[dict(w=3)]), dict(meta=dict(cfg=text)), ['layers.0.w'])
    assert not marker.exists()
    code = repr(f'pathlib.Path({str(marker)!r}).touch()')  # kept as text
    assert cause == ("model.layers.0.w is 3 here but 2 in the checkpoint's config; model.align is 'conv' here but "
                     f"{code} in the checkpoint's config")
