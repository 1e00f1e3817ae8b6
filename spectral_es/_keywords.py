"""Errors for keyword arguments that another library's users pass by habit.

pycma, scipy.optimize and torch.optim optimizers name many options
differently from this package. Python's own ``TypeError`` for an unknown
keyword gives no hint, so the public entry points are wrapped to add one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import ParamSpec, TypeVar

__all__ = ["hint_unknown_keywords"]

P = ParamSpec("P")
R = TypeVar("R")


def hint_unknown_keywords(
    hint: Callable[[str, Sequence[str]], str],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Return a decorator that names the fix when a call has an unknown keyword or a positional options dict.

    An unknown keyword argument raises ``TypeError`` with
    ``hint(name, accepted)`` (a string ending in ``"; "``, or ``""``)
    followed by the list of accepted keywords. An options dict passed
    positionally after all positional parameters
    (``SpectralES(x0, sigma0, opts)``) gets the advice to pass ``**opts``.
    Other calls that do not fit the signature raise Python's own
    ``TypeError``. The wrapper keeps the function's signature for
    ``inspect``, ``help()``, IDEs and type checkers, which a ``**kwargs``
    catch-all in the signature would not.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)
        parameters = list(signature.parameters.values())
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_any_keyword = any(p.kind == p.VAR_KEYWORD for p in parameters)
        keywords = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        # Positional parameters with a default (SpectralKron's lr, ...) are options too.
        required = [p.name for p in positional if p.default is p.empty]
        accepted = [name for name in keywords if name not in ("self", *required)]
        caller = function.__qualname__.removesuffix(".__init__")
        positional_names = ", ".join(p.name for p in positional if p.name != "self")

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            extra = args[len(positional) :]
            dict_index = next((k for k, value in enumerate(extra) if isinstance(value, Mapping)), None)
            if dict_index is not None:
                # Positions as the caller counts them, without self.
                position = len(positional) + dict_index + (0 if positional and positional[0].name == "self" else 1)
                raise TypeError(
                    f"{caller}() takes its options as keyword arguments, but positional argument {position} is a "
                    f"{type(extra[dict_index]).__name__}; pass them with **, as in "
                    f"{caller}({positional_names}, **options)"
                )
            unknown = [name for name in kwargs if name not in signature.parameters]
            if unknown and not takes_any_keyword:
                raise TypeError(
                    f"{caller}() got an unexpected keyword argument {unknown[0]!r}; {hint(unknown[0], accepted)}"
                    f"the options it accepts are {', '.join(accepted)}"
                )
            return function(*args, **kwargs)

        return wrapper

    return decorate
