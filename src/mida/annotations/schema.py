"""Label schemas: the common annotation format's versioned label sets.

A schema is a YAML or JSON file naming a set of labels. Every label carries a
coded concept (CodeValue, CodingSchemeDesignator, CodeMeaning: SNOMED CT,
RadLex, DCM...), a type, the values it may take and a colour::

    name: liver-lesions
    version: 1.0.0
    description: Focal liver lesions on contrast CT
    labels:
      - name: lesion
        type: mask            # classification | bbox | polygon | mask | measurement | text
        dims: 3
        concept: {CodeValue: "52988006", CodingSchemeDesignator: SCT, CodeMeaning: Lesion}
        colour: "#e6194b"
        key: "1"              # keyboard shortcut in the annotator
      - name: lirads
        type: classification
        level: study          # study | series | image
        values: [LR-1, LR-2, LR-3, LR-4, LR-5]
        concept: {CodeValue: LIRADS, CodingSchemeDesignator: 99MIDA, CodeMeaning: LI-RADS category}

A schema version, once added, is immutable: adding different content under the
same name and version is refused; adding identical content again is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mida.errors import SchemaError

LABEL_TYPES = ("classification", "bbox", "polygon", "mask", "measurement", "text")
LEVELS = ("study", "series", "image")
MEASURES = ("length", "area", "volume", "hu_stats")
MEASURE_UNITS = {"length": "mm", "area": "mm2", "volume": "mm3", "hu_stats": "[hnsf'U]"}

#: SEG "Segmented Property Category" used when a mask label names none.
DEFAULT_CATEGORY = {
    "CodeValue": "91723000",
    "CodingSchemeDesignator": "SCT",
    "CodeMeaning": "Anatomical Structure",
}


class Code(BaseModel):
    """A coded concept (PS3.3 Code Sequence Macro)."""

    model_config = ConfigDict(extra="forbid")
    CodeValue: str = Field(min_length=1, max_length=64)
    CodingSchemeDesignator: str = Field(min_length=1, max_length=16)
    CodeMeaning: str = Field(min_length=1, max_length=64)


class Label(BaseModel):
    """One label of a schema."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    type: Literal["classification", "bbox", "polygon", "mask", "measurement", "text"]
    concept: Code
    category: Code | None = None
    colour: str = "#ffff00"
    description: str = ""
    key: str | None = Field(default=None, max_length=1)
    level: Literal["study", "series", "image"] | None = None
    values: list[str] = Field(default_factory=list)
    dims: Literal[2, 3] | None = None
    measure: Literal["length", "area", "volume", "hu_stats"] | None = None

    @field_validator("colour")
    @classmethod
    def _colour(cls, v: str) -> str:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", v):
            raise ValueError("colour must be #RRGGBB")
        return v.lower()

    @model_validator(mode="after")
    def _per_type(self) -> Label:
        if self.type == "classification":
            self.level = self.level or "study"
            if len(set(self.values)) != len(self.values):
                raise ValueError("values repeat")
        elif self.values:
            raise ValueError(f"a {self.type} label takes no values")
        if self.type != "classification" and self.level is not None and self.type != "text":
            raise ValueError(f"level applies to classification and text labels, not {self.type}")
        if self.type == "mask":
            self.dims = self.dims or 3
        elif self.dims is not None:
            raise ValueError("dims applies to mask labels only")
        if self.type == "measurement":
            if self.measure is None:
                raise ValueError("a measurement label needs measure: " + "|".join(MEASURES))
        elif self.measure is not None:
            raise ValueError("measure applies to measurement labels only")
        return self

    @property
    def unit(self) -> str | None:
        return MEASURE_UNITS.get(self.measure or "")

    def category_code(self) -> Code:
        return self.category or Code(**DEFAULT_CATEGORY)


class Schema(BaseModel):
    """A versioned label set."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    version: str = Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}$")
    description: str = ""
    labels: list[Label] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Schema:
        names = [lb.name for lb in self.labels]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError("label names repeat: " + ", ".join(dup))
        keys = [lb.key for lb in self.labels if lb.key]
        dupk = sorted({k for k in keys if keys.count(k) > 1})
        if dupk:
            raise ValueError("shortcut keys repeat: " + ", ".join(dupk))
        return self

    def label(self, name: str) -> Label:
        for lb in self.labels:
            if lb.name == name:
                return lb
        raise SchemaError(
            f"label {name!r} is not in schema {self.ref}; its labels: "
            + ", ".join(lb.name for lb in self.labels)
        )

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def sha256(self) -> str:
        body = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


def parse_schema(body: Any, *, source: str = "schema") -> Schema:
    """Validate a decoded YAML/JSON body; errors name the offending field."""
    if not isinstance(body, dict):
        raise SchemaError(f"{source}: a label schema is a mapping with name, version and labels")
    try:
        return Schema.model_validate(body)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top)"
            parts.append(f"{where}: {err['msg']}")
        raise SchemaError(f"{source}: " + "; ".join(parts)) from None


def load_schema_file(path: Path) -> Schema:
    """Read a schema from ``.yaml``/``.yml``/``.json``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        body = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SchemaError(f"{path.name}: not valid {path.suffix.lstrip('.')}: {exc}") from None
    return parse_schema(body, source=path.name)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))
