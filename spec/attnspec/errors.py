"""The exceptions raised by every attnspec implementation on bad input.

One small family, so that a caller can catch :class:`AttnSpecError` for any
rejected call, or the built-in base (:class:`ValueError`, :class:`TypeError`)
it already expects. Messages name the argument, what was expected and what
came, e.g. ``keys.shape[-1] must equal query.shape[-1] for score_dot; got 32
and 64``. Conformance checks demand the exception *type*, never the wording.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "AttnSpecError",
    "DTypeError",
    "NonFiniteInputError",
    "ShapeError",
    "SpecificationStubError",
]


class AttnSpecError(Exception):
    """Base class of every exception attnspec specifies."""


class ShapeError(AttnSpecError, ValueError):
    """An array has the wrong rank, a size that does not match, or an empty axis."""


class DTypeError(AttnSpecError, TypeError):
    """An array or scalar has a dtype or type the function does not accept."""


class NonFiniteInputError(AttnSpecError, ValueError):
    """NaN or an infinity sits at a position that the result depends on."""


class ArgumentError(AttnSpecError, ValueError):
    """An option has a value outside its domain (scale, kind, alignment, width...)."""


class SpecificationStubError(AttnSpecError, NotImplementedError):
    """A body-less specification stub of :mod:`attnspec` was called.

    The stubs only state the rules; :mod:`attnref` executes them.
    """
