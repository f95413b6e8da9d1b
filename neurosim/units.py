"""Physical quantities at the edges of the library: Brian2 quantities, pint quantities and
unit strings in, plain SI floats inside.

Inside neurosim every number is SI (seconds, volts, amperes, hertz, ohms), as the
``DESIGN`` fixes. A user coming from Brian2 writes ``tau_m=20*ms``; a config writes
``tau_m = "20 ms"``. ``to_si`` turns either into ``0.02`` after checking the dimension, and
refuses ``20*mV`` for a time constant with an error that names the parameter, the unit
given and the unit expected. A plain number keeps meaning SI, but a magnitude that is
implausible for the quantity (a membrane time constant of 20 s, a time step of 0.1 s)
raises a ``ImplausibleQuantityWarning`` that says what was probably meant.

Unit strings are parsed by pint (``"20 ms"``, ``"-70 mV"``, ``"5 Hz"``, ``"1 nA"``,
``"100 Mohm"``); Brian2 quantities are read through Brian2 itself (imported only when one
is given, so Brian2 stays optional).

Library classes declare a physical field once, with ``physical(default, KIND)``, and
convert in ``__post_init__`` with ``convert_fields(self)``; config models use
``SI(KIND)`` as a pydantic annotation. Both use the same ``QuantityKind``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsFloat

import numpy as np
import numpy.typing as npt
from pydantic import BeforeValidator, ValidationInfo

if TYPE_CHECKING:
    import pint

__all__ = [
    "Dimension",
    "ImplausibleQuantityWarning",
    "QuantityKind",
    "QuantityLike",
    "UnitError",
    "array_to_si",
    "convert_fields",
    "physical",
    "to_si",
]


# what a physical argument accepts: an SI number, a unit string, or a Brian2 / pint quantity
QuantityLike = float | str | SupportsFloat


class UnitError(ValueError):
    """A quantity of the wrong dimension, or a unit string that cannot be read."""


class ImplausibleQuantityWarning(UserWarning):
    """A value whose magnitude is unusual for its quantity: probably a unit mix-up."""


class Dimension(enum.Enum):
    """A physical dimension, by its SI unit (pint's spelling, Brian2's name)."""

    TIME = ("s", "second")
    VOLTAGE = ("V", "volt")
    CURRENT = ("A", "amp")
    FREQUENCY = ("Hz", "hertz")
    RESISTANCE = ("ohm", "ohm")

    @property
    def si_unit(self) -> str:
        """The SI unit's symbol (pint's spelling)."""
        return self.value[0]

    @property
    def brian2_unit(self) -> str:
        """The SI unit's name in Brian2."""
        return self.value[1]


@dataclass(frozen=True)
class QuantityKind:
    """What a number means: its dimension and the magnitudes (of ``|value|``, SI) that are
    plausible for it; zero is always plausible (no refractory period, a silent input)."""

    name: str  # "membrane time constant"
    dimension: Dimension
    low: float = 0.0
    high: float = math.inf

    @property
    def signed(self) -> bool:
        """Whether a negative value means something (voltages, currents); for the others a
        negative value is refused by the parameter's own check, not warned about here."""
        return self.dimension in (Dimension.VOLTAGE, Dimension.CURRENT)

    def plausible(self, value: float) -> bool:
        """Whether ``|value|`` is in the usual range (zero always is)."""
        magnitude = abs(value)
        return magnitude == 0.0 or self.low <= magnitude <= self.high


# The kinds the library's parameters use. The ranges are wide on purpose: they catch a
# value written in ms or mV as a plain number (1000x too large), not an unusual model.
MEMBRANE_TIME_CONSTANT = QuantityKind("membrane time constant", Dimension.TIME, 1e-4, 2.0)
SYNAPTIC_TIME_CONSTANT = QuantityKind("synaptic time constant", Dimension.TIME, 1e-5, 2.0)
REFRACTORY_PERIOD = QuantityKind("refractory period", Dimension.TIME, 1e-5, 0.2)
TRACE_TIME_CONSTANT = QuantityKind("plasticity trace time constant", Dimension.TIME, 1e-4, 100.0)
# no upper bound: a huge tau_theta is the idiom for "thresholds frozen"
SLOW_TIME_CONSTANT = QuantityKind("adaptation time constant", Dimension.TIME, 1e-3)
TIME_STEP = QuantityKind("time step", Dimension.TIME, 1e-7, 5e-3)
DURATION = QuantityKind("duration", Dimension.TIME)
TIME = QuantityKind("time", Dimension.TIME)
MEMBRANE_POTENTIAL = QuantityKind("membrane potential", Dimension.VOLTAGE, 0.0, 0.5)
THRESHOLD_INCREMENT = QuantityKind("threshold increment", Dimension.VOLTAGE, 0.0, 0.5)
RESISTANCE = QuantityKind("membrane resistance", Dimension.RESISTANCE, 1e3, 1e13)
CURRENT = QuantityKind("input current", Dimension.CURRENT, 0.0, 1e-3)
RATE = QuantityKind("firing rate", Dimension.FREQUENCY, 0.0, 1e4)


@functools.cache
def _registry() -> pint.UnitRegistry[Any]:
    import pint

    return pint.UnitRegistry()


def _describe(value: Any) -> str:
    return f"{value!r}" if isinstance(value, str) else str(value)


def _mismatch(name: str, given: str, given_dimension: str, kind: QuantityKind) -> UnitError:
    expected = kind.dimension.name.lower()
    return UnitError(
        f"{name}: got {given} (a {given_dimension}), expected a {kind.name}: a {expected} in "
        f"{kind.dimension.si_unit} or a multiple of it"
    )


def _pint_dimension_name(value: Any) -> str:
    for dimension in Dimension:
        if value.dimensionality == _registry().Quantity(1.0, dimension.si_unit).dimensionality:
            return dimension.name.lower()
    return f"quantity of dimension {value.dimensionality}"


def _from_pint(value: Any, kind: QuantityKind, name: str) -> float:
    import pint

    expected = _registry().Quantity(1.0, kind.dimension.si_unit)
    try:
        return float(value.to(expected.units).magnitude)
    except pint.DimensionalityError:
        raise _mismatch(name, _describe(value), _pint_dimension_name(value), kind) from None


def _parse(text: str, kind: QuantityKind, name: str) -> float:
    import pint

    # pint's parser raises many types on malformed text (TokenError, AssertionError, ...): each
    # becomes the one error a caller expects, with pint's reason
    try:
        quantity: Any = _registry().Quantity(text.strip())
    except Exception as error:
        raise UnitError(f"{name}: cannot read {text!r} as a {kind.name} ({type(error).__name__}: {error})") from None
    if not isinstance(quantity, pint.Quantity) or quantity.dimensionless:
        raise UnitError(
            f"{name}: {text!r} has no unit; write a {kind.name} as a number (SI, {kind.dimension.si_unit}) "
            f"or as text with its unit, e.g. '20 m{kind.dimension.si_unit}'"
        )
    return _from_pint(quantity, kind, name)


def _from_brian2(value: Any, kind: QuantityKind, name: str) -> float:
    import brian2

    unit = getattr(brian2, kind.dimension.brian2_unit)
    if not brian2.have_same_dimensions(value, unit):
        given = next((d.name.lower() for d in Dimension
                      if brian2.have_same_dimensions(value, getattr(brian2, d.brian2_unit))),
                     f"quantity of dimension {brian2.get_dimensions(value)}")  # fmt: skip
        raise _mismatch(name, str(value), given, kind)
    return float(value / unit)


def _is_brian2_quantity(value: Any) -> bool:
    return type(value).__module__.startswith("brian2") and hasattr(value, "dim")


def _is_pint_quantity(value: Any) -> bool:
    return type(value).__module__.startswith("pint") and hasattr(value, "dimensionality")


# the prefixes a plain number was probably written in, per dimension (ms for seconds...)
_LIKELY_PREFIXES = {
    Dimension.TIME: ((1e-3, "m"),),
    Dimension.VOLTAGE: ((1e-3, "m"),),
    Dimension.CURRENT: ((1e-9, "n"), (1e-12, "p")),
}


def _suggestion(value: float, kind: QuantityKind) -> str:
    """What a plain number outside the plausible range probably meant."""
    unit = kind.dimension.si_unit
    for factor, prefix in _LIKELY_PREFIXES.get(kind.dimension, ()):
        if kind.plausible(value * factor):
            return f"; did you mean {value:g} {prefix}{unit} ({value * factor:g})?"
    return ""


def to_si(value: Any, kind: QuantityKind, name: str, *, warn: bool = True, stacklevel: int = 2) -> float:
    """``value`` as a plain SI float: a number (taken as SI), a unit string, a Brian2 or a
    pint quantity. Raises ``UnitError`` for the wrong dimension; warns
    (``ImplausibleQuantityWarning``, attributed ``stacklevel`` frames up) for a plain number
    outside the kind's usual range."""
    if isinstance(value, bool):
        raise UnitError(f"{name}: expected a {kind.name}, not a boolean")
    if _is_brian2_quantity(value):
        return _from_brian2(value, kind, name)
    if _is_pint_quantity(value):
        return _from_pint(value, kind, name)
    if isinstance(value, str):
        return _parse(value, kind, name)
    if not isinstance(value, numbers.Real):
        raise UnitError(f"{name}: expected a {kind.name} (a number in {kind.dimension.si_unit} or a quantity), "
                        f"got {type(value).__name__}")  # fmt: skip
    number = float(value)
    if warn and math.isfinite(number) and (number >= 0 or kind.signed) and not kind.plausible(number):
        unit = kind.dimension.si_unit
        span = f"{kind.low:g} to {kind.high:g} {unit}" if kind.low > 0 else f"at most {kind.high:g} {unit} in magnitude"
        warnings.warn(
            f"{name} = {number:g} {kind.dimension.si_unit} is an unusual {kind.name} (usually {span}); "
            f"plain numbers are SI{_suggestion(number, kind)}",
            ImplausibleQuantityWarning,
            stacklevel=stacklevel + 1,
        )
    return number


def array_to_si(value: Any, kind: QuantityKind, name: str) -> npt.NDArray[np.float64]:
    """``to_si`` for arrays: a Brian2 or pint array quantity, a list of unit strings, or
    numbers (SI; the plausibility warning looks at the largest magnitude)."""
    if _is_brian2_quantity(value):
        import brian2

        if not brian2.have_same_dimensions(value, getattr(brian2, kind.dimension.brian2_unit)):
            to_si(value.reshape(-1)[0] if getattr(value, "ndim", 0) else value, kind, name)  # raises the UnitError
        return np.asarray(value / getattr(brian2, kind.dimension.brian2_unit), dtype=np.float64)
    if _is_pint_quantity(value):
        unit = _registry().Quantity(1.0, kind.dimension.si_unit).units
        if value.dimensionality != unit.dimensionality:
            _from_pint(value, kind, name)  # raises the UnitError
        return np.asarray(value.to(unit).magnitude, dtype=np.float64)
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and any(is_quantity(v) for v in value)):
        items = [value] if isinstance(value, str) else list(value)
        return np.asarray([to_si(v, kind, f"{name}[{k}]") for k, v in enumerate(items)], dtype=np.float64).reshape(
            np.shape(value) if not isinstance(value, str) else ()
        )
    arr = np.asarray(value, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size:
        to_si(float(np.abs(finite).max()), kind, name, stacklevel=3)
    return arr


_KIND = "neurosim_quantity"


def physical(default: float, kind: QuantityKind) -> Any:
    """A dataclass field holding a ``kind`` quantity (stored as an SI float); the class
    converts what it was given with ``convert_fields`` in ``__post_init__``."""
    return dataclasses.field(default=default, metadata={_KIND: kind})


def convert_fields(instance: Any) -> None:
    """Every ``physical`` field of a (frozen) dataclass instance to an SI float, in place."""
    owner = type(instance).__name__
    for f in dataclasses.fields(instance):
        kind = f.metadata.get(_KIND)
        if kind is not None:
            value = getattr(instance, f.name)
            # the warning points at the user's call: to_si < convert_fields < __post_init__ < __init__ < caller
            object.__setattr__(instance, f.name, to_si(value, kind, f"{owner}.{f.name}", stacklevel=4))


def physical_fields(cls: type) -> dict[str, QuantityKind]:
    """The ``physical`` fields of dataclass ``cls`` and their kinds."""
    return {f.name: f.metadata[_KIND] for f in dataclasses.fields(cls) if _KIND in f.metadata}


def is_quantity(value: Any) -> bool:
    """A unit string, a Brian2 or a pint quantity (what ``to_si`` converts besides numbers)."""
    return isinstance(value, str) or _is_brian2_quantity(value) or _is_pint_quantity(value)


def SI(kind: QuantityKind) -> BeforeValidator:
    """A pydantic annotation: the field takes a number (SI) or a unit string (``"20 ms"``); a
    plain number outside the kind's usual range warns."""

    def convert(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, list):
            return [convert(v, info) for v in value]
        if is_quantity(value):
            return to_si(value, kind, info.field_name or kind.name)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return to_si(value, kind, info.field_name or kind.name, stacklevel=6)  # the plausibility warning
        return value  # pydantic reports anything else (booleans included)

    return BeforeValidator(convert)
