from .metric_guided_neck import MetricGuidedNeck

__all__ = ['MetricGuidedNeck']
