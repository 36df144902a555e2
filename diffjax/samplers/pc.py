"""Placeholder: being written; the names exist so the package imports meanwhile."""

class EulerMaruyama:
    def __init__(self, *a, **k):
        raise NotImplementedError('EulerMaruyama is being written')


class PredictorCorrector:
    def __init__(self, *a, **k):
        raise NotImplementedError('PredictorCorrector is being written')


class ReverseDiffusion:
    def __init__(self, *a, **k):
        raise NotImplementedError('ReverseDiffusion is being written')
