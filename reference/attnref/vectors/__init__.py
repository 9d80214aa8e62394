"""The exact truth and what is made from it: the golden vectors and the precision report.

Nothing in the reference core imports this package; it needs ``mpmath`` (the
``vectors`` extra) where the core needs only NumPy.

- :mod:`attnref.vectors.exact` -- the spec's formulas in arbitrary precision (mpmath).
- :mod:`attnref.vectors.tables` -- the golden cases: one table per spec function.
- :mod:`attnref.vectors.golden` -- the golden vectors: the tables' cases with exact answers and
  error scales, written as JSON for :mod:`attnspec.vectors` to read
  (``python -m attnref.vectors.golden``).
- :mod:`attnref.vectors.precision` -- the float64 reference against the truth, per clause
  (``python -m attnref.vectors.precision``).
"""
