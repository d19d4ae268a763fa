from .scef_hook import SCEFHook

__all__ = ['SCEFHook']
