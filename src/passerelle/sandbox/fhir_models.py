"""FHIR R4B validation with ``fhir.resources``, each distinct element validated once.

:class:`FhirValidator` validates a resource with its ``fhir.resources`` model exactly as
``model.model_validate`` does, but remembers every complex element it has seen valid (keyed by its
model and its exact JSON value): the next time the same element comes (the same type code, author,
custodian, facility, request line... in bundle after bundle), the already validated instance stands in
for it, which the model accepts as is. So the checks are the same — every value is validated by the
same model, once — and the refusals too: an element never seen valid is validated in place, with the
same error locations. Only the repeated work goes. Bounded (``max_entries``, least recently used out).
"""

from __future__ import annotations

import functools
import types
import typing
from collections import OrderedDict
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase
from pydantic import ValidationError

#: (model of the child, list of them?, resolved by the child's own resourceType?)
_Child = tuple[type[FHIRAbstractModel], bool, bool]
_POLYMORPHIC = frozenset({"Resource", "DomainResource", "Element"})


@functools.cache
def _children(model: type[FHIRAbstractModel]) -> dict[str, _Child]:
    """The complex elements of ``model``, by JSON name."""
    found: dict[str, _Child] = {}
    for name, info in model.model_fields.items():
        kind, many = _unwrap(info.annotation)
        if isinstance(kind, type) and issubclass(kind, FhirBase):
            child = kind.get_model_klass()
            found[info.alias or name] = (child, many, child.__name__ in _POLYMORPHIC)
    return found


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``Optional[List[X]]`` → (X, True); ``Optional[X]`` → (X, False)."""
    many = False
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
        elif origin is list and len(args) == 1:
            annotation, many = args[0], True
        else:
            return annotation, many


@functools.cache
def _attribute(model: type[FHIRAbstractModel], alias: str) -> str:
    for name, info in model.model_fields.items():
        if (info.alias or name) == alias:
            return name
    return alias


#: Where a validated instance is found under its resource: (attribute, index in a list or None) steps.
_Path = tuple[tuple[str, int | None], ...]
_Key = tuple[type[FHIRAbstractModel], str]


class FhirValidator:
    """Validates FHIR resources (see the module docstring). Not shared between threads."""

    def __init__(self, max_entries: int = 20_000, max_element_chars: int = 2_000) -> None:
        self._seen: OrderedDict[_Key, FHIRAbstractModel] = OrderedDict()
        self._max = max_entries
        #: larger elements are validated every time (they hardly ever come twice)
        self._max_chars = max_element_chars

    def errors(self, model: type[FHIRAbstractModel], value: dict[str, Any], prefix: str) -> list[str]:
        """What ``model.model_validate(value)`` refuses, as ``<prefix><location>: <error type>`` lines."""
        new: list[tuple[_Key, _Path]] = []
        try:
            instance = model.model_validate(self._shrink(model, value, (), new))
        except ValidationError as exc:
            return [
                f"{prefix}{'.'.join(str(part) for part in error['loc'])}: {error['type']}"
                for error in exc.errors(include_input=False, include_url=False)
            ]
        for key, path in new:  # every element validated in place is now known valid
            self._remember(key, _follow(instance, path))
        return []

    def _shrink(
        self, model: type[FHIRAbstractModel], value: dict[str, Any], path: _Path, new: list[tuple[_Key, _Path]]
    ) -> dict[str, Any]:
        """``value`` with each element already seen valid replaced by its validated instance; the
        others are listed in ``new`` (with where their instance will be)."""
        children = _children(model)
        out: dict[str, Any] | None = None
        for name, item in value.items():
            child = children.get(name)
            if child is None:
                continue
            attribute = _attribute(model, name)
            if child[1] and isinstance(item, list):
                parts = [self._stand_in(child, part, (*path, (attribute, i)), new) for i, part in enumerate(item)]
                changed: Any = parts if any(a is not b for a, b in zip(parts, item, strict=True)) else None
            elif not child[1] and isinstance(item, dict):
                one = self._stand_in(child, item, (*path, (attribute, None)), new)
                changed = one if one is not item else None
            else:
                continue
            if changed is not None:
                out = out if out is not None else dict(value)
                out[name] = changed
        return out if out is not None else value

    def _stand_in(self, child: _Child, value: Any, path: _Path, new: list[tuple[_Key, _Path]]) -> Any:
        if not isinstance(value, dict):
            return value
        kind = _concrete(child, value)
        if kind is None:
            return value
        text = repr(value)
        key = (kind, text)
        known = self._seen.get(key)
        if known is not None:
            self._seen.move_to_end(key)
            return known
        if len(text) <= self._max_chars:
            new.append((key, path))
        return self._shrink(kind, value, path, new)

    def _remember(self, key: _Key, instance: Any) -> None:
        if isinstance(instance, key[0]):
            self._seen[key] = instance
            if len(self._seen) > self._max:
                self._seen.popitem(last=False)


def _follow(instance: Any, path: _Path) -> Any:
    for attribute, index in path:
        instance = getattr(instance, attribute, None)
        if index is not None:
            instance = instance[index] if isinstance(instance, list) and index < len(instance) else None
    return instance


def _concrete(child: _Child, value: dict[str, Any]) -> type[FHIRAbstractModel] | None:
    """The model a value is validated with: the declared one, or for a ``Resource`` its resourceType's."""
    kind, _, polymorphic = child
    if not polymorphic:
        return kind
    try:
        found: type[FHIRAbstractModel] = get_fhir_model_class(str(value.get("resourceType")))
    except (KeyError, ValueError, LookupError):
        return None
    return found
