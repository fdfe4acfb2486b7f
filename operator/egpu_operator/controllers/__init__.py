"""The controllers, one module per kind, each in the same shape (STYLE.md 11).

``gather`` turns what the operator read into one typed view, ``decide`` (pure) turns the view
into ``Writes``, every write it intends as data, and ``applier.apply`` (the API layer) performs
them in order and returns what happened, refusals included, as an ``Outcome``. Where an outcome
changes a later write (a refused pod is reported in the status) the controller decides again
from the outcome; each such round is spelled out in the controller's ``reconcile``.
"""
