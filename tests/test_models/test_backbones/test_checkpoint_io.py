"""mmfusion.models.backbones.checkpoint_io: layouts, safe loading, mismatch reports."""
import json

import pytest
import torch
from safetensors.torch import save_file

from mmfusion.models.backbones.checkpoint_io import (
    CheckpointMismatchError,
    dinov3_to_hf,
    load_into,
    read_hf_folder,
    read_state_dict,
    resolve_checkpoint,
)

from .vfm_utils import hf_dinov3, hf_to_meta


def test_hub_layout_gets_transformers5_block_prefix():
    out = dinov3_to_hf({'layer.0.norm1.weight': torch.ones(1), 'model.layer.1.norm1.weight': torch.ones(1),
                        'norm.weight': torch.ones(1)})
    assert set(out) == {'model.layer.0.norm1.weight', 'model.layer.1.norm1.weight', 'norm.weight'}


def test_meta_layout_converts_to_exactly_the_transformers_keys():
    model = hf_dinov3()
    converted = dinov3_to_hf(hf_to_meta(model))
    assert set(converted) == set(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(converted[key], value, msg=key)


def test_meta_training_checkpoint_under_backbone_prefix():
    meta = {f'backbone.{k}': v for k, v in hf_to_meta(hf_dinov3()).items()}
    assert 'embeddings.patch_embeddings.weight' in dinov3_to_hf(meta)


def test_sharded_safetensors_folder(tmp_path):
    save_file({'a': torch.zeros(2)}, str(tmp_path / 'model-00001-of-00002.safetensors'))
    save_file({'b': torch.ones(3)}, str(tmp_path / 'model-00002-of-00002.safetensors'))
    index = {'weight_map': {'a': 'model-00001-of-00002.safetensors', 'b': 'model-00002-of-00002.safetensors'}}
    (tmp_path / 'model.safetensors.index.json').write_text(json.dumps(index))
    state, config = read_hf_folder(str(tmp_path))
    assert set(state) == {'a', 'b'} and config == {}


def test_folder_without_weights_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match='save_pretrained'):
        read_state_dict(str(tmp_path))


def test_training_checkpoint_is_unwrapped(tmp_path):
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': {'epoch': 3}}, tmp_path / 'x.pth')
    assert set(read_state_dict(str(tmp_path / 'x.pth'))) == {'w'}


def test_not_found_lists_where_we_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match='how to get it') as err:
        resolve_checkpoint('checkpoints/definitely_absent.pth', how_to_get='how to get it')
    assert 'definitely_absent.pth' in str(err.value)


def test_load_into_reports_every_missing_and_misshaped_key():
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {'0.weight': torch.zeros(3, 2), '1.weight': torch.zeros(1, 4), 'extra': torch.zeros(1)}
    with pytest.raises(CheckpointMismatchError) as err:
        load_into(module, state, source='test')
    msg = str(err.value)
    assert '0.bias' in msg and '1.bias' in msg and '1.weight: checkpoint (1, 4) vs model (1, 3)' in msg
    assert 'extra' in msg


def test_load_into_allows_optional_and_reports_unexpected():
    module = torch.nn.Linear(2, 3)
    report = load_into(module, {'weight': torch.ones(3, 2), 'extra': torch.zeros(1)}, source='test',
                       optional=lambda k: k == 'bias')
    assert report.missing == ['bias'] and report.unexpected == ['extra'] and report.loaded == ['weight']
    assert torch.equal(module.weight, torch.ones(3, 2))
