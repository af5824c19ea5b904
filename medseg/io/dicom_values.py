"""DICOM value rules (PS3.5 §6.2) checked before medseg writes a value: length, format, repertoire.

medseg is tolerant when reading DICOM and strict when writing it. Every value a writer puts into a
new object (patient and study attributes copied from a source series, names and descriptions of
our own) is checked here first, so that a 10,000-character Patient Name, a name whose bytes are not
valid in the source's Specific Character Set, or a 70-character UID is refused with a message
instead of being copied into a SEG/RTSTRUCT that conformant systems reject.

:func:`value_problem` checks one value of one VR; :func:`element_problems` walks a data element
(recursing into sequences). Both return plain-language problems (``None`` / an empty list when the
value is valid) so that the writer can phrase the error for its own context (which attribute, where
it came from, how to fix it).

Character repertoires: without (0008,0005) Specific Character Set only the default repertoire
(ASCII, ISO-IR 6) is allowed. pydicom decodes such values as Latin-1 and undecodable bytes in other
character sets as U+FFFD, so non-ASCII characters in the first case and U+FFFD in the second mean
bytes that were not valid in the declared character set.
"""

from __future__ import annotations

import datetime as _dt
import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence

from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import dictionary_VM
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

__all__ = [
    "DEFAULT_REPERTOIRE",
    "character_set_terms",
    "element_problems",
    "fits_character_set",
    "multiplicity_problem",
    "value_problem",
]

#: Specific Character Set terms that mean the default repertoire (ASCII).
DEFAULT_REPERTOIRE = ("", "ISO_IR 6", "ISO 2022 IR 6")

#: Maximum length in characters (PN: per component group).
_MAX_CHARS = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240,
    "PN": 64, "SH": 16, "ST": 1024, "TM": 14, "UI": 64,
}  # fmt: skip
#: VRs whose characters come from the Specific Character Set; all others are ASCII only.
_EXTENDED = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
#: Control characters allowed in a value (besides ESC for ISO 2022 code extensions).
_TEXT_CONTROLS = frozenset("\t\n\x0c\r")
_FORMATS = {
    "AS": re.compile(r"\d{3}[DWMY]"),
    "CS": re.compile(r"[A-Z0-9 _]*"),
    "DA": re.compile(r"\d{8}"),
    "DS": re.compile(r" *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"),
    "IS": re.compile(r" *[+-]?\d+ *"),
    "TM": re.compile(r"([01]\d|2[0-3])([0-5]\d(([0-5]\d|60)(\.\d{1,6})?)?)? *"),
    "UI": re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*"),
}


def character_set_terms(dataset: Dataset) -> tuple[str, ...]:
    """The (0008,0005) Specific Character Set terms of ``dataset`` (``("",)`` when absent)."""
    value = dataset.get("SpecificCharacterSet", "")
    terms = [str(v) for v in value] if isinstance(value, MultiValue | list) else [str(value)]
    return tuple(terms) or ("",)


def fits_character_set(text: str, terms: Sequence[str]) -> bool:
    """Whether ``text`` can be written in the character set ``terms`` without replacement.

    Examples
    --------
    >>> fits_character_set("Muller^Hans", ("",)), fits_character_set("Müller", ("",))
    (True, False)
    >>> fits_character_set("Müller", ("ISO_IR 100",)), fits_character_set("肝", ("ISO_IR 100",))
    (True, False)
    >>> fits_character_set("肝", ("ISO_IR 192",))
    True
    """
    if "\ufffd" in text:
        return False
    if len(terms) == 1 and terms[0] in DEFAULT_REPERTOIRE:
        return text.isascii()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns (and replaces) instead of raising
        try:
            encode_string(text, convert_encodings(list(terms)))
        except (UnicodeError, UserWarning, LookupError):
            return False
    return True


def _controls(text: str, allowed: frozenset[str]) -> list[str]:
    return sorted(
        {c for c in text if unicodedata.category(c) == "Cc" and c not in allowed and c != "\x1b"}
    )


def _date_problem(text: str) -> str | None:
    try:
        _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return f"{text!r} is not a calendar date (YYYYMMDD)"
    return None


def value_problem(vr: str, value: object, terms: Sequence[str] = ("",)) -> str | None:
    """Why one ``value`` is not valid for ``vr`` in character set ``terms``; ``None`` if valid.

    Multi-valued elements are checked one value at a time (the backslash delimiter is not part of
    a value). Binary and numeric VRs are not checked (pydicom types them).

    Examples
    --------
    >>> value_problem("PN", "Doe^John") is None
    True
    >>> value_problem("PN", "X" * 70)
    'a component group is 70 characters long (at most 64)'
    >>> value_problem("UI", "1.2.03")
    "'1.2.03' is not a UID (digits in components without leading zeros, separated by dots)"
    >>> value_problem("CS", "m")
    "'m' has characters other than A-Z, 0-9, space and underscore"
    >>> value_problem("LO", "Zürich")
    "'Zürich' has characters outside the declared character set (none: ASCII only)"
    """
    if value is None or (vr not in _MAX_CHARS and vr not in _EXTENDED):
        return None
    if isinstance(value, bytes):  # pragma: no cover - pydicom decodes text VRs
        return None
    original = None if isinstance(value, PersonName) else getattr(value, "original_string", None)
    text = str(value if original is None else original)  # DS/IS: the string as written
    if "\ufffd" in text:
        return (
            f"{text[:40]!r} holds bytes that are not valid in the declared character set "
            f"{_describe(terms)} (decoded as U+FFFD)"
        )
    repertoire = terms if vr in _EXTENDED else ("",)
    if not fits_character_set(text, repertoire):
        shown = text if len(text) <= 40 else text[:37] + "..."
        where = _describe(terms) if vr in _EXTENDED else f"none: {vr} is ASCII only"
        if vr not in _EXTENDED:
            return f"{shown!r} has characters outside the default repertoire ({where})"
        return f"{shown!r} has characters outside the declared character set ({where})"
    bad = _controls(text, _TEXT_CONTROLS if vr in ("LT", "ST", "UT") else frozenset())
    if bad:
        return f"it holds control characters {[hex(ord(c)) for c in bad]}"
    if "\\" in text and vr not in ("LT", "ST", "UT"):
        return "it holds a backslash, which DICOM reads as a separator between values"
    if vr == "PN":
        groups = text.split("=")
        if len(groups) > 3:
            return f"it has {len(groups)} component groups (at most 3, separated by '=')"
        for g in groups:
            if len(g) > _MAX_CHARS["PN"]:
                return f"a component group is {len(g)} characters long (at most 64)"
            if g.count("^") > 4:
                return f"a component group has {g.count('^') + 1} components (at most 5)"
        return None
    limit = _MAX_CHARS.get(vr)
    if limit is not None and len(text.rstrip(" ")) > limit:
        return f"it is {len(text)} characters long (at most {limit} for {vr})"
    fmt = _FORMATS.get(vr)
    if text.strip(" ") and fmt is not None and not fmt.fullmatch(text):
        if vr == "UI":
            return (
                f"{text!r} is not a UID (digits in components without leading zeros, "
                "separated by dots)"
            )
        if vr == "CS":
            return f"{text!r} has characters other than A-Z, 0-9, space and underscore"
        return f"{text!r} is not a valid {vr} value"
    if vr == "DA" and text.strip(" "):
        return _date_problem(text)
    if vr == "IS" and text.strip(" ") and not -(2**31) <= int(text) < 2**31:
        return f"{text} is outside the 32-bit range of IS"
    return None


def multiplicity_problem(tag: int, count: int) -> str | None:
    """Why ``count`` values do not fit the dictionary VM of ``tag`` (``None``: they do).

    Examples
    --------
    >>> multiplicity_problem(0x00100020, 2)  # PatientID, VM 1
    'it has 2 values (VM 1; a backslash separates values)'
    >>> multiplicity_problem(0x00200037, 6) is None  # ImageOrientationPatient, VM 6
    True
    """
    try:
        vm = dictionary_VM(tag)
    except KeyError:  # private or unknown: no rule to check
        return None
    low_text, _, high_text = vm.partition("-")
    low = int(low_text)
    if not high_text:
        high: int | None = low
    elif high_text.endswith("n"):
        high = None
    else:
        high = int(high_text)
    step = int(high_text[:-1] or 1) if high_text.endswith("n") else 1
    if count < low or (high is not None and count > high) or (count - low) % step:
        return f"it has {count} values (VM {vm}; a backslash separates values)"
    return None


def _describe(terms: Sequence[str]) -> str:
    if len(terms) == 1 and terms[0] in DEFAULT_REPERTOIRE:
        return "none: ASCII only"
    return "\\".join(terms)


def _values(value: object) -> Iterable[object]:
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def element_problems(
    element: DataElement, terms: Sequence[str], *, path: str = ""
) -> list[tuple[str, str, str]]:
    """``(attribute path, VR, problem)`` of every invalid value in ``element``, sequences included.

    ``path`` prefixes the attribute name (for items: ``"ReferencedStudySequence[0]."``). Items
    that declare their own Specific Character Set are checked in it.
    """
    name = f"{path}{element.keyword or element.tag} {element.tag}"
    if element.VR == "SQ":
        out = []
        for i, item in enumerate(element.value):
            item_terms = character_set_terms(item) if "SpecificCharacterSet" in item else terms
            for sub in item:
                out += element_problems(sub, item_terms, path=f"{path}{element.keyword}[{i}].")
        return out
    if element.is_empty:
        return []
    values = list(_values(element.value))
    problem = multiplicity_problem(element.tag, len(values))
    if problem is not None:
        return [(name, element.VR, problem)]
    for v in values:
        problem = value_problem(element.VR, v, terms)
        if problem is not None:
            return [(name, element.VR, problem)]
    return []
