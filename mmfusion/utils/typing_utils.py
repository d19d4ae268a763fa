"""Type aliases for config-driven constructors (the same names mmdet/mmseg use, without importing them)."""
from typing import List, Optional, Union

from mmengine.config import ConfigDict

ConfigType = Union[ConfigDict, dict]
OptConfigType = Optional[ConfigType]
MultiConfig = Union[ConfigType, List[ConfigType]]
OptMultiConfig = Optional[MultiConfig]
