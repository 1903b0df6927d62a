"""Base machinery for the libvirt XML config objects.

Every config object declares its attributes once, as *checks*: the check
both validates a value when it is assigned and says what the allowed values
are, so a wrong value fails where it is set, with a message naming the
attribute, the XML element and the allowed values, instead of as an opaque
libvirt error when the domain is defined.

Values that are containers (lists, dicts) can be changed in place after the
assignment; ``validate()`` re-runs every check, and ``format_dom()`` calls it,
so nothing unchecked ever reaches the XML.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

from lxml import etree

from nova_disk_tuning import exception

_T = TypeVar("_T")

# Characters XML 1.0 cannot carry at all: lxml refuses them, and a
# round trip could not preserve them, so they are refused up front.
_NOT_XML_CHAR = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _label(path: str) -> str:
    """'disk/driver' -> '<disk><driver>' for error messages."""
    return "".join(f"<{part}>" for part in path.split("/"))


def _invalid(name: str, path: str, value: object, allowed: str) -> exception.InvalidConfigValue:
    return exception.InvalidConfigValue(
        value=value, attribute=name, element=_label(path), allowed=allowed
    )


class Check:
    """Validation of one attribute; returns the value to store."""

    @staticmethod
    def default() -> Any:
        return None

    def __init__(
        self, path: str, allowed: str, test: Callable[[Any], bool], required: bool = False
    ) -> None:
        self.path = path
        self.allowed = allowed
        self._test = test
        # A required attribute has a default and can never be None.
        self.required = required

    def accepts(self, value: Any) -> bool:
        return value is not None and self._test(value)

    def __call__(self, name: str, value: Any) -> Any:
        if value is None:
            if self.required:
                raise _invalid(name, self.path, value, self.allowed)
            return None
        if not self._test(value):
            raise _invalid(name, self.path, value, self.allowed)
        return value


def _is_int(value: object) -> bool:
    # bool is an int subclass; True as a queue count is a bug, not a 1.
    return isinstance(value, int) and not isinstance(value, bool)


def enum(path: str, *choices: str, required: bool = False) -> Check:
    return Check(path, ", ".join(repr(c) for c in choices), lambda v: v in choices, required)


def enum_int(path: str, *choices: int) -> Check:
    return Check(path, ", ".join(map(str, choices)), lambda v: _is_int(v) and v in choices)


def on_off(path: str) -> Check:
    return enum(path, "on", "off")


def positive_int(path: str) -> Check:
    return Check(path, "a positive integer", lambda v: _is_int(v) and v > 0)


class _DecimalInt(Check):
    """An int, or a decimal string of one, stored as the int."""

    def __call__(self, name: str, value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch("[0-9]+", value):
            value = int(value)
        return super().__call__(name, value)


def positive_int_or_decimal(path: str) -> Check:
    """Like :func:`positive_int`, also taking ``"1"``.

    Nova's libvirt driver sets ``boot_order`` from the block device mapping
    as a string; its own config object renders it as is.
    """
    return _DecimalInt(
        path, "a positive integer or its decimal string", lambda v: _is_int(v) and v > 0
    )


def int_range(path: str, low: int, high: int) -> Check:
    return Check(path, f"integers {low}..{high}", lambda v: _is_int(v) and low <= v <= high)


def text(path: str) -> Check:
    return Check(
        path,
        "a non-empty string of XML characters",
        lambda v: isinstance(v, str) and v != "" and not _NOT_XML_CHAR.search(v),
    )


def pattern(path: str, regex: str, allowed: str) -> Check:
    compiled = re.compile(regex)
    return Check(path, allowed, lambda v: isinstance(v, str) and bool(compiled.fullmatch(v)))


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def uuid_text(path: str) -> Check:
    return Check(path, "a UUID string", _is_uuid)


class Flag:
    """A boolean that is rendered as an empty element when True."""

    @staticmethod
    def default() -> bool:
        return False

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _invalid(name, self.path, value, "True, False")
        return value


class ListOf:
    """A list whose items all pass ``item``; stored as a fresh list."""

    @staticmethod
    def default() -> list[Any]:
        return []

    def __init__(self, item: Any, allow_none: bool = False) -> None:
        self.item = item
        self.allow_none = allow_none

    def __call__(self, name: str, value: Any) -> list[Any]:
        if value is None:
            return []
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            path = getattr(self.item, "path", "?")
            raise _invalid(name, path, value, "a list")
        items = list(value)
        if not self.allow_none and None in items:
            path = getattr(self.item, "path", "?")
            raise _invalid(name, path, None, getattr(self.item, "allowed", "not None"))
        return [self.item(name, v) for v in items]


class Instance:
    """An attribute holding another config object (or None)."""

    @staticmethod
    def default() -> Any:
        return None

    def __init__(self, path: str, *types: type) -> None:
        self.path = path
        self.types = types

    def __call__(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, self.types):
            allowed = ", ".join(t.__name__ for t in self.types)
            raise _invalid(name, self.path, value, f"instances of {allowed}")
        return value


class LibvirtConfigObject:
    """An object that renders to and parses from one XML element.

    Subclasses set ``root_name`` and list their attributes with checks in
    ``checks`` (and non-empty starting values in ``defaults``); a subclass's
    ``checks`` and ``defaults`` extend its parents'.  Every attribute can be
    given as a keyword argument.  Equality is by value over all attributes,
    so round trips can be compared with ``==``.
    """

    root_name: ClassVar[str] = ""
    checks: ClassVar[dict[str, Any]] = {}
    defaults: ClassVar[dict[str, Any]] = {}
    _all_checks: ClassVar[dict[str, Any]] = {}
    _all_defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        checks: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            checks.update(klass.__dict__.get("checks", {}))
            defaults.update(klass.__dict__.get("defaults", {}))
        cls._all_checks = checks
        cls._all_defaults = defaults

    # XML attribute -> Python attribute that says which kind of device an
    # element is (a disk's type, a controller's type): a guest skips device
    # elements of kinds this class does not model, like any unknown element.
    kind_attributes: ClassVar[dict[str, str]] = {}

    @classmethod
    def models(cls, xmldoc: etree._Element) -> bool:
        for xml_name, name in cls.kind_attributes.items():
            value = xmldoc.get(xml_name)
            if value is not None and not cls._all_checks[name].accepts(value):
                return False
        return True

    def __init__(self, **kwargs: Any) -> None:
        for name, check in self._all_checks.items():
            if name in self._all_defaults:
                setattr(self, name, self._all_defaults[name])
            else:
                setattr(self, name, check.default())
        for name, value in kwargs.items():
            if name not in self._all_checks:
                raise TypeError(f"{type(self).__name__} has no attribute {name!r}")
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        check = self._all_checks.get(name)
        if check is not None:
            value = check(name, value)
        super().__setattr__(name, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if v not in (None, [], {}, False)
        )
        return f"{type(self).__name__}({fields})"

    def validate(self) -> None:
        """Re-check every attribute (containers may have been changed in place)."""
        for name, check in self._all_checks.items():
            check(name, getattr(self, name))
            value = getattr(self, name)
            if isinstance(value, LibvirtConfigObject):
                value.validate()
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, LibvirtConfigObject):
                        item.validate()

    # XML ---------------------------------------------------------------

    def format_dom(self) -> etree._Element:
        self.validate()
        return etree.Element(self.root_name)

    def parse_dom(self, xmldoc: etree._Element) -> None:
        if xmldoc.tag != self.root_name:
            raise _invalid("root element", type(self).__name__, xmldoc.tag, repr(self.root_name))

    def to_xml(self, pretty_print: bool = True) -> str:
        return etree.tostring(self.format_dom(), encoding="unicode", pretty_print=pretty_print)

    def parse_str(self, xmlstr: str | bytes) -> None:
        # As bytes, so a document with an <?xml ... encoding=...?> declaration
        # (a saved libvirt.xml) parses too; lxml refuses that in a str.
        data = xmlstr.encode("utf-8") if isinstance(xmlstr, str) else xmlstr
        try:
            root = etree.fromstring(data)
        except etree.XMLSyntaxError as exc:
            raise exception.InvalidConfig(
                reason=f"cannot parse libvirt <{self.root_name}> XML: {exc}; "
                "pass the XML libvirt produced or this object rendered"
            )
        self.parse_dom(root)


# Small helpers shared by the element classes ---------------------------------


def set_attrs(element: etree._Element, **attrs: object) -> None:
    """Set the attributes whose value is not None, in the order given."""
    for key, value in attrs.items():
        if value is not None:
            element.set(key, str(value))


def required(value: _T | None, name: str, check: Check) -> _T:
    """``value`` read from XML, or the error ``check`` gives for a missing one.

    For parsers of attributes (or list items) that cannot be None: the error
    is the one assigning None would raise, raised before the assignment.
    """
    if value is None:
        raise _invalid(name, check.path, None, check.allowed)
    return value


def parse_int(element: etree._Element, attr: str, path: str, name: str) -> int | None:
    """Read an integer attribute (decimal or 0x hex, as libvirt writes addresses)."""
    raw = element.get(attr)
    if raw is None:
        return None
    try:
        # Not int(raw, 0): that refuses decimal numbers with leading zeros.
        if raw.strip().lower().startswith("0x"):
            return int(raw, 16)
        return int(raw, 10)
    except ValueError:
        raise _invalid(name, path, raw, "an integer")


def parse_text_int(element: etree._Element | None, path: str, name: str) -> int | None:
    if element is None or element.text is None:
        return None
    try:
        return int(element.text.strip())
    except ValueError:
        raise _invalid(name, path, element.text, "an integer")


def invalid(name: str, path: str, value: object, allowed: str) -> exception.InvalidConfigValue:
    """The error for a value that is fine alone but not with its neighbours."""
    return _invalid(name, path, value, allowed)


class DictOfLists:
    """``{key: [item, ...]}``; stored as a fresh dict of fresh lists, order kept."""

    def __init__(self, key: Check, item: Check) -> None:
        self.key = key
        self.item = item

    @staticmethod
    def default() -> dict[Any, list[Any]]:
        return {}

    def __call__(self, name: str, value: Any) -> dict[Any, list[Any]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _invalid(name, self.key.path, value, "a dict of lists")
        result: dict[Any, list[Any]] = {}
        for key, items in value.items():
            if key is None:
                raise _invalid(name, self.key.path, key, self.key.allowed)
            result[self.key(name, key)] = ListOf(self.item)(name, items)
        return result
