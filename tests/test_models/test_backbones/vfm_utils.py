"""Tiny versions of the real DINOv3 / SAM2 architectures, and writers of the official checkpoint layouts.

The writers are the inverse of mmfusion's readers, written independently from the upstream layouts (Meta's dinov3
repository, SAM2's ``{'model': {'image_encoder.*'}}``), so a parity test checks the converter, not itself.
"""
import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from transformers import DINOv3ViTConfig, DINOv3ViTModel

# 3 blocks, 2 heads of 16 channels (RoPE needs head_dim % 4 == 0), 2 register tokens.
TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                num_register_tokens=2)
# Hiera with every feature of B+ (q-pooling at each stage change, windowed and global blocks, windowed pos-embed).
TINY_HIERA = dict(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3, ), window_spec=(8, 4, 4, 2),
                  window_pos_embed_bkg_spatial_size=(4, 4), q_pool=3)
TINY_HIERA_CHANNELS = (8, 16, 32, 64)


def randomise_(module, seed=0):
    """Overwrite every parameter with random values (zeros, ones and LayerScale 1.0 would hide mapping errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + (0.5 if p.dim() == 1 else 0.0))
    return module


def hf_dinov3(seed=0, **overrides):
    """transformers' own DINOv3 model, tiny, random, eval mode."""
    return randomise_(DINOv3ViTModel(DINOv3ViTConfig(**{**TINY_VIT, **overrides})), seed).eval()


def hf_to_meta(model):
    """Meta's dinov3 state dict for a transformers ``DINOv3ViTModel``."""
    sd = model.state_dict()
    cfg = model.config
    dim = cfg.hidden_size
    meta = {
        'cls_token': sd['embeddings.cls_token'],
        'storage_tokens': sd['embeddings.register_tokens'],
        'mask_token': sd['embeddings.mask_token'][0],  # Meta stores (1, D)
        'patch_embed.proj.weight': sd['embeddings.patch_embeddings.weight'],
        'patch_embed.proj.bias': sd['embeddings.patch_embeddings.bias'],
        'rope_embed.periods': 1 / model.rope_embeddings.inv_freq,
        'norm.weight': sd['norm.weight'],
        'norm.bias': sd['norm.bias'],
    }
    for i in range(cfg.num_hidden_layers):
        hf, b = f'model.layer.{i}.', f'blocks.{i}.'
        att = hf + 'attention.'
        meta[b + 'attn.qkv.weight'] = torch.cat([sd[att + f'{n}_proj.weight'] for n in 'qkv'])
        # Meta keeps a key bias and masks it to zero; fill it with garbage to prove it is ignored.
        garbage = torch.full((dim, ), 7.0)
        meta[b + 'attn.qkv.bias'] = torch.cat([sd[att + 'q_proj.bias'], garbage, sd[att + 'v_proj.bias']])
        meta[b + 'attn.qkv.bias_mask'] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
        meta[b + 'attn.proj.weight'] = sd[att + 'o_proj.weight']
        meta[b + 'attn.proj.bias'] = sd[att + 'o_proj.bias']
        for n in (1, 2):
            meta[b + f'norm{n}.weight'] = sd[hf + f'norm{n}.weight']
            meta[b + f'norm{n}.bias'] = sd[hf + f'norm{n}.bias']
            meta[b + f'ls{n}.gamma'] = sd[hf + f'layer_scale{n}.lambda1']
        if cfg.use_gated_mlp:
            for meta_name, hf_name in (('w1', 'gate_proj'), ('w2', 'up_proj'), ('w3', 'down_proj')):
                meta[b + f'mlp.{meta_name}.weight'] = sd[hf + f'mlp.{hf_name}.weight']
                meta[b + f'mlp.{meta_name}.bias'] = sd[hf + f'mlp.{hf_name}.bias']
        else:
            for meta_name, hf_name in (('fc1', 'up_proj'), ('fc2', 'down_proj')):
                meta[b + f'mlp.{meta_name}.weight'] = sd[hf + f'mlp.{hf_name}.weight']
                meta[b + f'mlp.{meta_name}.bias'] = sd[hf + f'mlp.{hf_name}.bias']
    return {k: v.clone() for k, v in meta.items()}


def hf_patch_map(model, x):
    """transformers' last_hidden_state patch tokens as a (B, C, H/16, W/16) map."""
    out = model(pixel_values=x).last_hidden_state
    prefix = 1 + model.config.num_register_tokens
    b, _, h, w = x.shape
    return out[:, prefix:].transpose(1, 2).reshape(b, -1, h // 16, w // 16)


def sam2_encoder(seed=0, trunk=TINY_HIERA):
    """sam2's own ImageEncoder (trunk + FpnNeck as in SAM2.1's configs, no scalp), tiny, random, eval mode."""
    hiera = Hiera(**trunk)
    neck = FpnNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=32, normalize=True, scale=None,
                                                           temperature=10000),
                   d_model=32, backbone_channel_list=list(hiera.channel_list), fpn_top_down_levels=[2, 3],
                   fpn_interp_model='nearest')
    return randomise_(ImageEncoder(trunk=hiera, neck=neck, scalp=0), seed).eval()


def sam2_checkpoint(encoder):
    """The official SAM2 checkpoint layout, with a few non-encoder keys as in the real files."""
    model = {f'image_encoder.{k}': v.clone() for k, v in encoder.state_dict().items()}
    model['sam_mask_decoder.iou_prediction_head.layers.0.weight'] = torch.zeros(2, 2)
    model['maskmem_tpos_enc'] = torch.zeros(7, 1, 1, 4)
    return {'model': model}
