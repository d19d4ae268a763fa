from .checkpoint_hook import SafeCheckpointHook
from .rng_state_hook import RNGStateHook
from .scef_hook import SCEFHook

__all__ = ['RNGStateHook', 'SCEFHook', 'SafeCheckpointHook']
