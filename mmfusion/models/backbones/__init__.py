from .dinov3 import DINOv3ViT
from .hf_backbone import HFBackbone
from .master_aux import MasterAuxBackbone, MasterAuxOutputs
from .sam2_hiera import SAM2Hiera

__all__ = ['DINOv3ViT', 'HFBackbone', 'SAM2Hiera', 'MasterAuxBackbone', 'MasterAuxOutputs']
