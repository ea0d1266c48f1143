"""Named, versioned de-identification profiles kept as YAML files.

A profile file holds one :class:`~mida.deid.profile.Profile`::

    name: research-full-dates        # must equal the file name without .yaml
    version: "1"                     # recorded in every de-identified instance
    description: Basic Profile + Retain Longitudinal Full Dates
    options:                         # PS3.15 option keys (or their names)
      - rtnLongFullDatesOpt
      - retain-patient-characteristics
    overrides:                       # tag or keyword -> keep | remove | "replace:VALUE"
      "(0008,103E)": keep
      BodyPartExamined: remove

Profiles come from two folders, in order: the files shipped with mida
(``mida/deid/profiles/*.yaml``: ``basic``, ``default`` and
``research-full-dates``) and a node's own ``MIDA_HOME/profiles/*.yaml``. A
node profile may not reuse the name of a shipped one, so ``default`` means
the same thing at every site. Every error names the file and the key at
fault.

Examples
--------
>>> profiles = available_profiles(None)
>>> sorted(profiles)
['basic', 'default', 'research-full-dates']
>>> sorted(profiles["research-full-dates"].options)  # doctest: +NORMALIZE_WHITESPACE
['cleanDescOpt', 'cleanGraphOpt', 'cleanStructContOpt', 'rtnLongFullDatesOpt',
 'rtnPatCharsOpt', 'rtnSafePrivOpt']
>>> option_key("retain-patient-characteristics")
'rtnPatCharsOpt'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mida.deid.profile import Profile, parse_overrides
from mida.deid.table import Option
from mida.errors import DeidError

_FIELDS = {"name", "version", "description", "options", "overrides"}


def shipped_dir() -> Path:
    """The folder of the profile files shipped with mida."""
    return Path(str(resources.files("mida.deid") / "profiles"))


def option_key(name: str) -> str:
    """The option key for ``name``: a key (``rtnPatCharsOpt``) or a name.

    Names are the :class:`~mida.deid.table.Option` member names in any case,
    with ``-`` or ``_`` (``retain-patient-characteristics``).

    Raises
    ------
    DeidError
        If ``name`` is no option; the message lists them.
    """
    text = name.strip()
    for opt in Option:
        if text == opt.value or text.upper().replace("-", "_") == opt.name:
            return opt.value
    known = ", ".join(f"{o.value} ({o.name.lower().replace('_', '-')})" for o in Option)
    raise DeidError(f"unknown de-identification option {name!r}; options: {known}")


def _fail(path: Path, key: str, message: str) -> DeidError:
    return DeidError(f"{path}: {key}: {message}")


def load_profile_file(path: Path) -> Profile:
    """Read and validate one YAML profile file.

    Parameters
    ----------
    path
        A ``.yaml`` file as described in this module.

    Returns
    -------
    Profile
        The validated profile.

    Raises
    ------
    DeidError
        If the file cannot be read or parsed, or a key is missing, unknown or
        invalid; the message starts with ``<path>: <key>:``.
    """
    path = Path(path)
    try:
        doc: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeidError(f"{path}: cannot read the profile file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise DeidError(f"{path}: not valid YAML{line}") from exc
    if not isinstance(doc, dict):
        raise DeidError(f"{path}: a profile file must be a mapping with keys "
                        f"{', '.join(sorted(_FIELDS))}")
    unknown = sorted(str(k) for k in doc if k not in _FIELDS)
    if unknown:
        raise _fail(path, unknown[0], f"unknown key; allowed keys: {', '.join(sorted(_FIELDS))}")
    for key in ("name", "version"):
        if key not in doc or doc[key] is None:
            raise _fail(path, key, "missing")
        if not isinstance(doc[key], str | int | float):
            raise _fail(path, key, "must be a string")
    name, version = str(doc["name"]), str(doc["version"])
    if name != path.stem:
        raise _fail(path, "name", f"{name!r} must equal the file name without .yaml "
                                  f"({path.stem!r})")
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise _fail(path, "description", "must be a string")
    raw_options = doc.get("options") or []
    if not isinstance(raw_options, list):
        raise _fail(path, "options", "must be a list of option keys")
    options: set[str] = set()
    for i, opt in enumerate(raw_options):
        try:
            options.add(option_key(str(opt)))
        except DeidError as exc:
            raise _fail(path, f"options[{i}]", str(exc)) from None
    raw_over = doc.get("overrides") or {}
    if not isinstance(raw_over, dict):
        raise _fail(path, "overrides", "must be a mapping of tag or keyword to an action")
    overrides: dict[int, str] = {}
    for key, action in raw_over.items():
        where = f"overrides[{key!r}]"
        if not isinstance(key, str):
            raise _fail(path, where, "quote the tag, e.g. \"(0008,103E)\" (YAML reads "
                                     "unquoted digits as a number)")
        if not isinstance(action, str) or not (
            action in ("keep", "remove") or action.startswith("replace:")
        ):
            raise _fail(path, where, "the action must be 'keep', 'remove' or 'replace:<value>'")
        try:
            overrides.update(parse_overrides([(str(key), action)]))
        except DeidError as exc:
            raise _fail(path, where, str(exc)) from None
    try:
        return Profile(name=name, version=version, options=frozenset(options),
                       overrides=overrides, description=" ".join(description.split()))
    except DeidError as exc:
        raise DeidError(f"{path}: {exc}") from None


def profile_files(home: Path | None) -> dict[str, Path]:
    """Profile name to file: the shipped files, then ``home/profiles/*.yaml``.

    Raises
    ------
    DeidError
        If a node file reuses the name of a shipped profile.
    """
    out = {p.stem: p for p in sorted(shipped_dir().glob("*.yaml"))}
    if home is not None:
        for p in sorted((Path(home) / "profiles").glob("*.yaml")):
            if p.stem in out:
                raise DeidError(f"{p}: name: {p.stem!r} is a profile shipped with mida; "
                                "give the node's profile another name")
            out[p.stem] = p
    return out


def available_profiles(home: Path | None) -> dict[str, Profile]:
    """Every profile file, loaded and validated, by name.

    Parameters
    ----------
    home
        The node folder (``MIDA_HOME``), or None for the shipped profiles only.

    Raises
    ------
    DeidError
        If any file is invalid (the message names the file and key).
    """
    return {name: load_profile_file(p) for name, p in sorted(profile_files(home).items())}


__all__ = [
    "available_profiles",
    "load_profile_file",
    "option_key",
    "profile_files",
    "shipped_dir",
]
