"""Tiny configs of the Hugging Face families mmfusion.HFBackbone runs (hidden 32 or less, 2 blocks or 1 block per
stage), keyed by ``model_type``, as HFBackbone's ``config=`` dicts."""

TINY_BLOCKS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
# Hierarchical encoders: four stages of one block (two in the third, as SAM2 needs a global block inside a stage).
TINY_HF = {
    'dinov2': dict(model_type='dinov2', hidden_size=32, mlp_ratio=2, num_hidden_layers=2, num_attention_heads=2,
                   image_size=64, patch_size=8),
    'dinov2_with_registers': dict(model_type='dinov2_with_registers', hidden_size=32, mlp_ratio=2,
                                  num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8,
                                  num_register_tokens=2),
    'dinov3_vit': dict(model_type='dinov3_vit', **TINY_BLOCKS, patch_size=8, num_register_tokens=2),
    'dinov3_convnext': dict(model_type='dinov3_convnext', hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
    'swin': dict(model_type='swin', embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                 image_size=64),
    'hiera': dict(model_type='hiera', embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=[64, 64]),
    'clip_vision_model': dict(model_type='clip_vision_model', **TINY_BLOCKS, image_size=64, patch_size=8),
    'siglip_vision_model': dict(model_type='siglip_vision_model', **TINY_BLOCKS, image_size=64, patch_size=8),
    'siglip2_vision_model': dict(model_type='siglip2_vision_model', **TINY_BLOCKS, num_patches=64, patch_size=8),
    'sam_vision_model': dict(model_type='sam_vision_model', hidden_size=32, mlp_dim=64, num_hidden_layers=2,
                             num_attention_heads=2, image_size=64, patch_size=8, output_channels=16,
                             global_attn_indexes=[1], window_size=4),
    'sam2_vision_model': dict(
        model_type='sam2_vision_model', fpn_hidden_size=16, backbone_channel_list=[64, 32, 16, 8],
        backbone_config=dict(model_type='sam2_hiera_det_model', hidden_size=8, num_attention_heads=1,
                             blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                             num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[8, 4, 4, 2],
                             global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4])),
}


def tiny_hf_config(model_type: str) -> dict:
    """A copy of the tiny config of ``model_type`` (composite types, e.g. 'clip', give their vision encoder's)."""
    key = model_type if model_type in TINY_HF else f'{model_type}_vision_model'
    if key not in TINY_HF:
        raise AssertionError(f'no tiny config for HF model_type {model_type!r}; add one to TINY_HF')
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_HF[key].items()}
