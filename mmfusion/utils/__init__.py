from .typing_utils import ConfigType, MultiConfig, OptConfigType, OptMultiConfig

__all__ = ['ConfigType', 'OptConfigType', 'MultiConfig', 'OptMultiConfig']
