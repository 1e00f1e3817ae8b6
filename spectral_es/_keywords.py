"""Errors for keyword arguments and attributes that another library's users type by habit.

pycma, scipy.optimize and torch.optim optimizers name many options and
attributes differently from this package. Python's own ``TypeError`` for an
unknown keyword and ``AttributeError`` for an unknown attribute give no
hint, so the public entry points are wrapped to add one, and the classes
whose attributes have other names elsewhere call :func:`handle_missing_attribute`
from their ``__getattr__``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

__all__ = ["handle_missing_attribute", "hint_unknown_keywords", "missing_attribute"]

P = ParamSpec("P")
R = TypeVar("R")


def hint_unknown_keywords(
    hint: Callable[[str, Sequence[str]], str],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Return a decorator that names the fix for a call with an unknown keyword, an options dict or extra positionals.

    An unknown keyword argument raises ``TypeError`` with
    ``hint(name, accepted)`` (a string ending in ``"; "``, or ``""``)
    followed by the list of accepted keywords. An options dict passed
    positionally, after the positional parameters
    (``SpectralES(x0, sigma0, opts)``) or in the place of an optional one
    (``SpectralKron(params, opts)``), gets the advice to pass ``**opts``.
    More positional arguments than positional parameters (AdamW's sixth,
    ``amsgrad``, say) get a ``TypeError`` that lists the positional
    parameters and advises passing the rest by keyword. Other calls that do
    not fit the signature raise Python's own
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
        is_method = bool(positional) and positional[0].name == "self"
        example = ", ".join(name for name in required if name != "self")

        takes_any_positional = any(p.kind == p.VAR_POSITIONAL for p in parameters)
        positional_names = [p.name for p in positional if p.name != "self"]

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # A subclass's errors carry its own name, found from self at call time.
            caller = f"{type(args[0]).__name__}.{function.__name__}" if is_method and args else function.__qualname__
            caller = caller.removesuffix(".__init__")
            if (
                len(args) > len(positional)
                and not takes_any_positional
                and not any(isinstance(value, Mapping) for value in args)
            ):
                passed = len(args) - (1 if is_method else 0)
                count = f"{len(positional_names)} positional argument{'' if len(positional_names) == 1 else 's'}"
                raise TypeError(
                    f"{caller}() takes at most {count} "
                    f"({', '.join(positional_names)}) but {passed} were given; pass the others by keyword (name=value)"
                )
            # An options dict in a slot that takes no dict: one past the
            # positional parameters, or an optional one such as lr.
            for index, value in enumerate(args):
                takes_mapping = index < len(positional) and (
                    positional[index].default is positional[index].empty
                    or isinstance(positional[index].default, Mapping)
                )
                if isinstance(value, Mapping) and not takes_mapping:
                    position = index + (0 if is_method else 1)  # as the caller counts, without self
                    raise TypeError(
                        f"{caller}() takes its options as keyword arguments, but positional argument {position} is "
                        f"a {type(value).__name__}; pass them with **, as in {caller}({example}, **options)"
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


def missing_attribute(obj: object, name: str, foreign: Mapping[str, str]) -> AttributeError:
    """Return the ``AttributeError`` for a missing ``obj.name``, with ``foreign[name]`` as the fix if present.

    ``foreign`` maps other libraries' attribute names to advice such as
    ``"pycma's countiter is nit here"``. The error keeps ``name`` and
    ``obj``, from which Python suggests similar names for other typos.
    """
    message = f"{type(obj).__name__!r} object has no attribute {name!r}"
    if name in foreign:
        message += f"; {foreign[name]}"
    return AttributeError(message, name=name, obj=obj)


def handle_missing_attribute(obj: object, name: str, foreign: Mapping[str, str]) -> Any:
    """Run the property ``name`` of ``obj`` again, or raise :func:`missing_attribute` if there is no such property.

    Meant as the body of a ``__getattr__``. Python calls ``__getattr__`` also
    when a property's getter raises ``AttributeError``, for example on an
    attribute that a pickle from an older version lacks. A new error would
    then report the property itself as missing. Running the getter again
    raises its own error, which names the attribute that is really missing.
    """
    descriptor = inspect.getattr_static(type(obj), name, None)
    if isinstance(descriptor, property):
        return descriptor.__get__(obj, type(obj))
    raise missing_attribute(obj, name, foreign)
