"""A registry of things created by name from a config: backbones (``model.architectures``) and
federated methods (``method``).  Each package holds one :class:`Registry`; its member files
register themselves with a decorator, and the package imports every member file so that all
names are known once the package is imported.  The config schemas take their enums from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, overload

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Named factories (functions or classes) of one ``kind``, chosen by the config field ``field``.

    >>> backbones = Registry("architecture", field="model.architectures")
    >>> @backbones.register("vgg11")
    ... def vgg11(in_channels, input_size, width): ...
    >>> backbones.get("vgg11") is vgg11
    True
    """

    def __init__(self, kind: str, *, field: str):
        self.kind = kind
        self.field = field
        self._members: dict[str, T] = {}

    @overload
    def register(self, obj: T, /) -> T: ...
    @overload
    def register(self, name: str | None = None, /) -> Callable[[T], T]: ...

    def register(self, arg=None, /):
        """Register a function or class, as a bare decorator (``@r.register``) or with a name
        (``@r.register("vgg11")``).  A bare one is named by its class attribute ``name`` when a class
        sets one, else by its ``__name__``.  Registering a name twice is an error."""
        if arg is None or isinstance(arg, str):
            return lambda obj: self._add(obj, arg)
        return self._add(arg, None)

    def _add(self, obj: T, name: str | None) -> T:
        if name is None:
            own = getattr(obj, "name", None) if isinstance(obj, type) else None
            name = own if isinstance(own, str) and own else obj.__name__
        if name in self._members:
            first = self._members[name]
            raise ValueError(f"{self.kind} {name!r} is registered twice: by {_where(first)} and by {_where(obj)}")
        self._members[name] = obj
        return obj

    def names(self) -> list[str]:
        """The registered names, sorted (what the config field allows)."""
        return sorted(self._members)

    def get(self, name: str) -> T:
        """The function or class registered as ``name``; an unknown name is a ``ValueError`` that
        names the config field and lists the allowed values."""
        try:
            return self._members[name]
        except (KeyError, TypeError):
            raise ValueError(f"{self.field}: unknown {self.kind} {name!r}; allowed values: {', '.join(self.names())}") from None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, field={self.field!r}, names={self.names()})"


def _where(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
