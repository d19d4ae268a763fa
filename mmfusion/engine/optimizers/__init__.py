from .fusion_constructor import FusionOptimWrapperConstructor

__all__ = ['FusionOptimWrapperConstructor']
