"""Placeholder: being written; the names exist so the package imports meanwhile."""

class DDIM:
    def __init__(self, *a, **k):
        raise NotImplementedError('DDIM is being written')


class Ancestral:
    def __init__(self, *a, **k):
        raise NotImplementedError('Ancestral is being written')
