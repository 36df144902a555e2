"""Placeholder: being written; the names exist so the package imports meanwhile."""

class ProbabilityFlowODE:
    def __init__(self, *a, **k):
        raise NotImplementedError('ProbabilityFlowODE is being written')
