"""The method registry: a method is one module that declares its name, options and FLOP floor.

A module of this package, or of another package named in the environment variable ``MEDSEMISEG_METHODS``
(comma-separated module names), declares the methods it provides in a module attribute ``METHODS``: a tuple of
:class:`MethodSpec`. Everything that needs to know the methods reads them here:

- :func:`create_method` builds a method by name (the bundles' ``--method``, the cost benchmark, the scripts);
- :func:`method_names` lists them (the grid's check of its ``methods``, the cost benchmark's default list);
- :attr:`MethodSpec.floor` is the FLOP floor the cost benchmark compares a method's measured FLOPs with;
- :attr:`MethodSpec.options` are the keyword options ``--method_options`` may set (the class's constructor's, but
  those starting with ``_``, which a subclass passes its base).

Adding a method is one module: a :class:`~medsemiseg.methods.base.Method` subclass and its ``METHODS``; dropped into
``medsemiseg/methods/`` it is found by name, elsewhere it is found once its module is named in
``MEDSEMISEG_METHODS`` (set it for the bundle command, the benchmark runner and the cost benchmark alike).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "ENV",
    "FlopFloor",
    "MethodSpec",
    "canonical_method_name",
    "create_method",
    "get",
    "method_names",
    "requires_unlabeled",
    "specs",
]

#: the environment variable naming modules outside this package that declare ``METHODS``
ENV = "MEDSEMISEG_METHODS"

#: constructor parameters that are a method's inputs, not options a user sets
INPUTS = ("self", "network", "num_classes", "base", "discriminator")


@dataclasses.dataclass(frozen=True)
class FlopFloor:
    """The forward / backward passes a method cannot avoid in one iteration.

    Counted in units of one image through the segmentation network (``network``, F; a trained pass, forward and
    backward, is 3 F), through its encoder alone (``encoder``, E) and through the SUFD discriminator
    (``discriminator``, G). Each maps ``"l"`` / ``"u"`` to passes per labelled / unlabelled image of the batch;
    ``text`` says the passes in words (the cost benchmark's table prints it).
    """

    network: Mapping[str, float] = dataclasses.field(default_factory=dict)
    encoder: Mapping[str, float] = dataclasses.field(default_factory=dict)
    discriminator: Mapping[str, float] = dataclasses.field(default_factory=dict)
    text: str = ""

    def units(self, b_l: int, b_u: int) -> tuple[float, float, float]:
        """``(F units, E units, G units)`` of one iteration with ``b_l`` labelled and ``b_u`` unlabelled images."""

        def count(passes: Mapping[str, float]) -> float:
            return passes.get("l", 0) * b_l + passes.get("u", 0) * b_u

        return count(self.network), count(self.encoder), count(self.discriminator)


Builder = Callable[["MethodSpec", Any, int, dict, str], Any]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method as the registry knows it.

    Args:
        name: the name users type (``--method``), lower case with ``_``.
        cls: the :class:`~medsemiseg.methods.base.Method` subclass built.
        summary: one line saying what the method is.
        floor: its FLOP floor (``None``: the cost benchmark does not measure it).
        order: where the method comes in listings (the baselines first, the paper's method last; others after).
        listed: whether :func:`method_names` lists it (``False`` for accepted variants, e.g. ``fixmatch_sufd``).
        aliases: other names that build it (``classmix_sufd`` for ``sufd``).
        base: for a method that wraps another (SUFD), the wrapped method's name.
        wrapper_options: a wrapper's own options (added to its base's).
        build: ``build(spec, network, num_classes, options, what)``; default: the class's constructor with
            ``(network, num_classes, **options)``, or ``(num_classes, **options)`` when it takes no network.
    """

    name: str
    cls: type
    summary: str
    floor: FlopFloor | None = None
    order: int = 100
    listed: bool = True
    aliases: tuple[str, ...] = ()
    base: str | None = None
    wrapper_options: tuple[str, ...] = ()
    build: Builder | None = None

    @property
    def options(self) -> list[str]:
        """The keyword options :func:`create_method` accepts for this method."""
        own = [p for p in inspect.signature(self.cls.__init__).parameters if p not in INPUTS and not p.startswith("_")]
        if self.base is None:
            return own
        return get(self.base).options + list(self.wrapper_options)

    @property
    def requires_unlabeled(self) -> bool:
        """Whether the method draws an unlabelled batch every step (a wrapper follows its base)."""
        if self.base is not None:
            return get(self.base).requires_unlabeled
        return bool(self.cls.requires_unlabeled)

    def create(self, network: Any, num_classes: int, options: Mapping[str, Any], what: str) -> Any:
        """The method built for ``network`` with ``options``; ``what`` starts error messages."""
        if self.build is not None:
            return self.build(self, network, num_classes, dict(options), what)
        return construct(self.cls, network, num_classes, dict(options), what)


def construct(cls: type, network: Any, num_classes: int, options: dict, what: str) -> Any:
    """``cls(network, num_classes, **options)`` (without ``network`` when its constructor takes none); an unknown
    option is a ``TypeError`` listing the valid ones, or naming the wrapper method whose option it is."""
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in options if k not in params or k in INPUTS)
    if unknown:
        wrappers = [s for s in specs().values() if s.base is not None and set(unknown) <= set(s.wrapper_options)]
        if wrappers:
            owner = wrappers[0].cls.__name__
            names = ", ".join(repr(s.name) for s in wrappers)
            raise TypeError(f"{what}: {unknown} are {owner} options; use a {owner} method ({names}).")
        valid = [p for p in params if p not in INPUTS and not p.startswith("_")]
        raise TypeError(f"{what}: unknown option(s) {unknown}; valid options: {valid}.")
    args = (network, num_classes) if "network" in params else (num_classes,)
    return cls(*args, **options)


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace("+", "_").replace("-", "_").replace(" ", "")


_loaded: dict[str, dict[str, MethodSpec]] = {}


def _modules() -> list[str]:
    package = __name__.rsplit(".", 1)[0]
    here = importlib.import_module(package)
    ours = [f"{package}.{m.name}" for m in pkgutil.iter_modules(here.__path__) if not m.name.startswith("_")]
    theirs = [m.strip() for m in os.environ.get(ENV, "").split(",") if m.strip()]
    return ours + theirs


def specs() -> dict[str, MethodSpec]:
    """Every registered method by name, in listing order (read once per value of ``MEDSEMISEG_METHODS``)."""
    key = os.environ.get(ENV, "")
    if key in _loaded:
        return _loaded[key]
    found: dict[str, MethodSpec] = {}
    names: set[str] = set()
    for module_name in _modules():
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ImportError(f"{ENV} names the module {module_name!r}, which cannot be imported ({e}).") from e
        declared = getattr(module, "METHODS", None)
        if declared is None:
            if not module_name.startswith(__name__.rsplit(".", 1)[0] + "."):
                raise ValueError(f"{ENV} names the module {module_name!r}, which declares no METHODS.")
            continue  # a helper module of this package (base, registry)
        for spec in declared:
            for name in (spec.name, *spec.aliases):
                if _normalise(name) in names:
                    raise ValueError(f"method name {name!r} is declared twice (again in {module_name}).")
                names.add(_normalise(name))
            found[spec.name] = spec
    ordered = dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))
    _loaded[key] = ordered
    return ordered


def method_names() -> list[str]:
    """The listed methods' names, baselines first and the paper's method last."""
    return [name for name, spec in specs().items() if spec.listed]


def canonical_method_name(name: str) -> str:
    """``"SupMix+SUFD"`` -> ``"supmix_sufd"``; a ``ValueError`` listing the valid names for an unknown one."""
    key = _normalise(name)
    for spec in specs().values():
        if key == spec.name or key in (_normalise(a) for a in spec.aliases):
            return spec.name
    also = [a for s in specs().values() for a in s.aliases] + [n for n, s in specs().items() if not s.listed]
    raise ValueError(
        f"unknown method {name!r}; valid names: {', '.join(method_names())} (also "
        + "".join(f"{a!r}, " for a in also) + "and '+' or '-' for '_', e.g. 'supmix+sufd')."
    )


def get(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name`` (any spelling :func:`canonical_method_name` accepts)."""
    return specs()[canonical_method_name(name)]


def requires_unlabeled(name: str) -> bool:
    """Whether the method ``name`` draws an unlabelled batch every step, known without building it."""
    return get(name).requires_unlabeled


def create_method(name: str, network: Any, num_classes: int, **options: Any) -> Any:
    """Build a configured method by name.

    Args:
        name: a registered method (:func:`method_names`, or an accepted variant / alias), case-insensitive,
            ``+`` / ``-`` read as ``_``.
        network: the segmentation network the trainer trains (already on its device): a mean teacher is copied from
            it, the SUFD discriminator is created on its device.
        num_classes: classes including background.
        options: keyword options of the method (:attr:`MethodSpec.options`, ``docs/methods.md``). Unknown options
            raise ``TypeError`` listing the valid ones; an option of the wrong type or out of its range raises
            ``TypeError`` / ``ValueError`` naming ``name``, the class, the option, the value and the valid range.
    """
    what = f"create_method({name!r})"
    try:
        return get(name).create(network, num_classes, options, what)
    except (ValueError, TypeError) as err:
        if type(err) not in (ValueError, TypeError) or str(err).startswith(("create_method(", "unknown method ")):
            raise  # already names the method (an unknown name says so itself)
        # the same error with the user's method name in front (kept as the root of the chain, which the bundle CLI
        # prints last), with the original traceback
        raise type(err)(f"{what}: {err}").with_traceback(err.__traceback__) from None
