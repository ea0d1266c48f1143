"""Synthetic DICOM studies that carry planted PHI, for tests and demos.

:func:`generate` writes a small, realistic archive of Taiwanese patients: per
patient a CT study (two, on different dates, for even-numbered patients), an
MR study and a CR chest radiograph, plus an ultrasound image with the name,
ID and date burned into the pixels for every third patient (0, 3, ...). The
identifying values sit where hospital systems put them: the Patient and Study
modules, free-text comments with Minguo (民國) dates, sequences nested three
deep, and a private block with a private sequence (next to vendor private
attributes without PHI, :data:`VENDOR_PRIVATE`). Every planted string is
listed in the returned :class:`SampleManifest` (also written as
``phi_manifest.json``), so a de-identifier's output can be scanned for leaks.

Output is a pure function of the arguments: the same call writes the same
bytes, UIDs included (``2.25`` UIDs from name-based UUIDs of the seed, the
parameters and the object's place in the archive).

The values are fictitious; the hospitals are invented and carry a ``MIDA``
prefix. Nothing here is read from real records.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
)

from mida.dicom import twid

PHI_CATEGORIES: tuple[str, ...] = (
    "names",
    "ids",
    "birth_dates",
    "addresses",
    "phones",
    "uids",
    "other",
)
"""Keys of :attr:`SampleManifest.phi`, in a stable order."""

MANIFEST_NAME = "phi_manifest.json"
"""File name of the manifest written at the root of the output folder."""

PRIVATE_CREATOR = "MIDA SAMPLE HOSPITAL PACS"
"""Private creator of the block planted in group ``0x0029``."""

PRIVATE_GROUP = 0x0029

VENDOR_PRIVATE: dict[str, tuple[tuple[str, int, int, str, str], ...]] = {
    "CT": (
        ("GEMS_ACQU_01", 0x0019, 0x23, "DS", "39.375"),  # Table Speed [mm/rotation]
        ("GEMS_ACQU_01", 0x0019, 0x27, "DS", "0.5"),  # Rotation Speed (Gantry Period)
    ),
    "MR": (("SIEMENS MR HEADER", 0x0019, 0x0C, "IS", "1000"),),  # B Value
}
"""Vendor private attributes with research value, no PHI: ``(creator, group, element
byte, VR, value)`` per modality. The safe-private dictionary lists them, so Retain
Safe Private keeps them."""

US_ROWS, US_COLUMNS = 480, 640

_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mida:dicom:sample")
_MIN_PLANTED = 4  # shorter generic values (sex, age, "CT") are not listed...
_MIN_NAME = 2  # ...but name parts are (美玲, 陳美玲)


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class SampleStudy:
    """One generated study, for tests that follow a patient over time.

    Attributes use DICOM keywords where one exists; ``patient`` is the
    patient's index and ``files`` the study's instances, relative to the
    output root.
    """

    patient: int
    PatientID: str
    StudyInstanceUID: str
    StudyDate: str
    Modality: str
    AccessionNumber: str
    files: list[str]


@dataclass(frozen=True)
class BurnedInText:
    """A line of text drawn into the pixels of an image.

    ``row``/``column`` is the top-left corner and ``rows``/``columns`` the
    size of the text box in pixels.
    """

    text: str
    row: int
    column: int
    rows: int
    columns: int


@dataclass(frozen=True)
class SampleManifest:
    """What :func:`generate` wrote, and every identifying string it planted.

    Attributes
    ----------
    seed
        The seed the archive was generated from.
    parameters
        The other arguments of :func:`generate`.
    counts
        Number of instances per ``Modality``.
    files
        Paths of the DICOM files relative to the output root, sorted.
    studies
        One record per study, in path order.

        Paths are only ever stored under keys named ``files`` (or as keys of
        `burned_in`), so a scan that collects every other string of the JSON
        collects PHI only.
    phi
        Planted strings by category (see :data:`PHI_CATEGORIES`): ``names``
        (patients' and mothers' names in every form used, and components of
        two characters or more), ``ids`` (national IDs, chart and NHI card
        numbers, accession, study and procedure IDs), ``birth_dates`` (DA),
        ``addresses``, ``phones``, ``uids`` (every UID generated) and ``other``
        (institutions, staff names, stations, serial numbers, free text,
        Minguo dates). Generic values under four characters (sex, age,
        modality) and patient characteristics (age, size, weight, ethnic
        group) are not listed. Each string occurs verbatim (UTF-8) in at least
        one file; short ones can also occur by chance in pixel bytes, so scan
        element values rather than raw bytes.
    burned_in
        Text drawn into pixel data, by file; it is not in the element values.
    """

    seed: int
    parameters: dict[str, int]
    counts: dict[str, int]
    files: list[str]
    studies: list[SampleStudy]
    phi: dict[str, list[str]]
    burned_in: dict[str, list[BurnedInText]] = field(default_factory=dict)

    def phi_strings(self) -> list[str]:
        """Return every planted string of every category, sorted and unique."""
        return sorted({s for values in self.phi.values() for s in values})

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleManifest:
        """Rebuild a manifest from :meth:`to_dict` output."""
        return cls(
            seed=int(data["seed"]),
            parameters=dict(data["parameters"]),
            counts=dict(data["counts"]),
            files=list(data["files"]),
            studies=[SampleStudy(**s) for s in data["studies"]],
            phi={k: list(v) for k, v in data["phi"].items()},
            burned_in={
                rel: [BurnedInText(**b) for b in boxes]
                for rel, boxes in data.get("burned_in", {}).items()
            },
        )

    def write(self, path: Path) -> None:
        """Write the manifest as UTF-8 JSON (byte-stable for equal manifests)."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=True)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> SampleManifest:
        """Read a manifest written by :meth:`write` (e.g. ``out/phi_manifest.json``)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- pools

_SURNAMES = (
    ("Chen", "陳"), ("Lin", "林"), ("Huang", "黃"), ("Chang", "張"), ("Lee", "李"),
    ("Wang", "王"), ("Liu", "劉"), ("Tsai", "蔡"), ("Yang", "楊"), ("Hsu", "許"),
    ("Cheng", "鄭"), ("Hsieh", "謝"), ("Kuo", "郭"), ("Hung", "洪"), ("Tseng", "曾"),
    ("Chiu", "邱"), ("Liao", "廖"), ("Lai", "賴"), ("Chou", "周"), ("Chuang", "莊"),
    ("Chiang", "江"), ("Hsiao", "蕭"), ("Chien", "簡"), ("Peng", "彭"),
)  # fmt: skip
_GIVEN = {
    "F": (
        ("Mei-Ling", "美玲"), ("Shu-Fen", "淑芬"), ("Ya-Ting", "雅婷"), ("Yi-Chun", "怡君"),
        ("Hui-Chen", "惠珍"), ("Shu-Hui", "淑惠"), ("Li-Hua", "麗華"), ("Hsiao-Wen", "筱雯"),
        ("Pei-Yu", "佩瑜"), ("Chia-Hui", "佳慧"), ("Yu-Chen", "鈺真"), ("Hsin-Yi", "心怡"),
    ),
    "M": (
        ("Chih-Ming", "志明"), ("Chun-Hung", "俊宏"), ("Chien-Hung", "建宏"),
        ("Wen-Hsiung", "文雄"), ("Kuan-Yu", "冠宇"), ("Cheng-Han", "承翰"),
        ("Chia-Hao", "家豪"), ("Tsung-Han", "宗翰"), ("Ming-Hsun", "明勳"),
        ("Po-Wei", "柏維"), ("Yu-Hsiang", "宇翔"), ("Chin-Lung", "金龍"),
    ),
}  # fmt: skip
# zip, city, district, road (Chinese); the same in romanisation; ID letter; area code
_AREAS = (
    ("106", "臺北市", "大安區", "復興南路一段", "Taipei City", "Da'an Dist.",
     "Sec. 1, Fuxing S. Rd.", "A", "02"),
    ("110", "臺北市", "信義區", "松仁路", "Taipei City", "Xinyi Dist.", "Songren Rd.", "A", "02"),
    ("220", "新北市", "板橋區", "文化路一段", "New Taipei City", "Banqiao Dist.",
     "Sec. 1, Wenhua Rd.", "F", "02"),
    ("231", "新北市", "新店區", "北新路三段", "New Taipei City", "Xindian Dist.",
     "Sec. 3, Beixin Rd.", "F", "02"),
    ("320", "桃園市", "中壢區", "中正路", "Taoyuan City", "Zhongli Dist.", "Zhongzheng Rd.",
     "H", "03"),
    ("407", "臺中市", "西屯區", "臺灣大道三段", "Taichung City", "Xitun Dist.",
     "Sec. 3, Taiwan Blvd.", "B", "04"),
    ("701", "臺南市", "東區", "大學路", "Tainan City", "East Dist.", "Daxue Rd.", "D", "06"),
    ("802", "高雄市", "苓雅區", "四維三路", "Kaohsiung City", "Lingya Dist.", "Siwei 3rd Rd.",
     "E", "07"),
)  # fmt: skip
_OCCUPATIONS = (
    "Teacher", "Engineer", "Farmer", "Nurse", "Accountant", "Shop owner", "Taxi driver",
    "Civil servant", "Fisherman", "Homemaker",
)  # fmt: skip
_HISTORIES = (
    "HBV carrier, s/p RFA for HCC",
    "Fatty liver, DM type 2",
    "Hepatitis C, on DAA",
    "RUQ pain, r/o cholelithiasis",
    "F/U liver hemangioma",
)


@dataclass(frozen=True)
class _Hospital:
    code: str
    name: str
    name_zh: str
    address: str
    phone: str


_HOSPITALS = (
    _Hospital("FGH", "MIDA Formosa General Hospital", "米達福爾摩沙綜合醫院",
              "No. 1, Sec. 1, Ren'ai Rd., Zhongzheng Dist., Taipei City 100", "(02)2311-0000"),
    _Hospital("HMH", "MIDA Harbour Memorial Hospital", "米達港都紀念醫院",
              "No. 88, Zhongshan 1st Rd., Xinxing Dist., Kaohsiung City 800", "(07)235-0000"),
    _Hospital("CTUH", "MIDA Central Taiwan University Hospital", "米達中台灣大學附設醫院",
              "No. 2, Yude Rd., North Dist., Taichung City 404", "(04)2205-0000"),
)  # fmt: skip


@dataclass(frozen=True)
class _Person:
    family: str
    given: str
    family_zh: str
    given_zh: str
    sex: str

    @property
    def alphabetic(self) -> str:
        return f"{self.family}^{self.given}"

    @property
    def ideographic(self) -> str:
        return f"{self.family_zh}^{self.given_zh}"

    @property
    def pn(self) -> str:
        return f"{self.alphabetic}={self.ideographic}"

    @property
    def latin(self) -> str:
        return f"{self.family} {self.given}"

    @property
    def chinese(self) -> str:
        return self.family_zh + self.given_zh

    @property
    def upper(self) -> str:
        """The form ultrasound consoles and PACS worklists show."""
        return f"{self.family.upper()}, {self.given.upper()}"


class _NameDeck:
    """Draws distinct names; reshuffles (allowing repeats) only when exhausted."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._decks: dict[str, list[tuple[int, int]]] = {"F": [], "M": []}

    def draw(self, sex: str) -> _Person:
        deck = self._decks[sex]
        if not deck:
            pairs = [(s, g) for s in range(len(_SURNAMES)) for g in range(len(_GIVEN[sex]))]
            deck.extend(pairs[int(i)] for i in self._rng.permutation(len(pairs)))
        s, g = deck.pop()
        (family, family_zh), (given, given_zh) = _SURNAMES[s], _GIVEN[sex][g]
        return _Person(family, given, family_zh, given_zh, sex)


# --------------------------------------------------------------------------- bookkeeping


class _Uids:
    """Deterministic ``2.25`` UIDs: name-based UUIDs of the run key and a name."""

    def __init__(self, key: str) -> None:
        self._key = key
        self.issued: list[str] = []

    def __call__(self, name: str) -> str:
        uid = f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{self._key}/{name}').int}"
        self.issued.append(uid)
        return uid


class _Planted:
    """Records each identifying string as it is planted."""

    def __init__(self) -> None:
        self.phi: dict[str, set[str]] = {c: set() for c in PHI_CATEGORIES}

    def __call__(self, category: str, value: str) -> str:
        if len(value) >= (_MIN_NAME if category == "names" else _MIN_PLANTED):
            self.phi[category].add(value)
        return value

    def person(self, category: str, person: _Person) -> str:
        """Record a PN value and its components; return the PN value."""
        for value in (person.pn, person.alphabetic, person.ideographic):
            self.phi[category].add(value)
        for part in (person.family, person.given, person.given_zh):
            if len(part) >= 2:
                self.phi[category].add(part)
        return person.pn


def _roc(date: dt.date) -> tuple[str, str]:
    """Minguo forms of a date: ``民國112年3月4日`` and ``112/03/04``."""
    year = date.year - 1911
    return (
        f"民國{year}年{date.month}月{date.day}日",
        f"{year}/{date.month:02d}/{date.day:02d}",
    )


def _ds(value: float) -> str:
    """A DS string of at most 16 characters."""
    return f"{value:.8g}"


def _serial(*parts: str) -> str:
    """A stable number for a fixed thing (a device, a staff member)."""
    return f"{zlib.crc32('/'.join(parts).encode()) % 10**7:07d}"


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


# --------------------------------------------------------------------------- people


@dataclass
class _Patient:
    index: int
    person: _Person
    mother: _Person
    national_id: str
    birth: dt.date
    chart: str
    nhi_card: str
    address_zh: str
    address_en: str
    mobile: str
    home: str
    occupation: str
    history: str
    hospital: _Hospital
    staff: list[_Person]
    size: float
    weight: float


def _make_patient(
    rng: np.random.Generator, index: int, deck: _NameDeck, used: set[str],
    staff: dict[str, list[_Person]],
) -> _Patient:  # fmt: skip
    sex = "F" if index % 2 == 0 else "M"
    person = deck.draw(sex)
    mother = deck.draw("F")
    area = _AREAS[int(rng.integers(len(_AREAS)))]
    zip_, city, dist, road, city_en, dist_en, road_en, letter, code = area
    nid = twid.generate(rng, sex, letter=letter)
    while nid in used:
        nid = twid.generate(rng, sex, letter=letter)
    used.add(nid)
    no, floor = int(rng.integers(1, 400)), int(rng.integers(2, 16))
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 62)))
    local = 8 if code in ("02", "04") else 7
    home_digits = str(int(rng.integers(2, 9))) + _digits(rng, local - 1)
    hospital = _HOSPITALS[index % len(_HOSPITALS)]
    return _Patient(
        index=index,
        person=person,
        mother=mother,
        national_id=nid,
        birth=birth,
        chart=str(int(rng.integers(1, 10))) + _digits(rng, 7),
        nhi_card="0000" + _digits(rng, 8),
        address_zh=f"{zip_}{city}{dist}{road}{no}號{floor}樓",
        address_en=f"{floor}F., No. {no}, {road_en}, {dist_en}, {city_en} {zip_}, Taiwan (R.O.C.)",
        mobile=f"09{_digits(rng, 2)}-{_digits(rng, 3)}-{_digits(rng, 3)}",
        home=f"({code}){home_digits[:-4]}-{home_digits[-4:]}",
        occupation=str(rng.choice(_OCCUPATIONS)),
        history=str(rng.choice(_HISTORIES)),
        hospital=hospital,
        staff=staff[hospital.code],
        size=round(1.5 + 0.3 * float(rng.random()), 2),
        weight=round(45 + 40 * float(rng.random()), 1),
    )


# --------------------------------------------------------------------------- pixels

# 5x7 bitmap font: seven rows of five bits per glyph, as hex pairs.
_FONT_HEX = {
    "0": "0E11131519110E", "1": "040C040404040E", "2": "0E11010204081F",
    "3": "1F02040201110E", "4": "02060A121F0202", "5": "1F101E0101110E",
    "6": "0608101E11110E", "7": "1F010204080808", "8": "0E11110E11110E",
    "9": "0E11110F01020C", "A": "0E1111111F1111", "B": "1E11111E11111E",
    "C": "0E11101010110E", "D": "1C12111111121C", "E": "1F10101E10101F",
    "F": "1F10101E101010", "G": "0E11101711110F", "H": "1111111F111111",
    "I": "0E04040404040E", "J": "0702020202120C", "K": "11121418141211",
    "L": "1010101010101F", "M": "111B1515111111", "N": "11111915131111",
    "O": "0E11111111110E", "P": "1E11111E101010", "Q": "0E11111115120D",
    "R": "1E11111E141211", "S": "0F10100E01011E", "T": "1F040404040404",
    "U": "1111111111110E", "V": "11111111110A04", "W": "1111111515150A",
    "X": "11110A040A1111", "Y": "1111110A040404", "Z": "1F01020408101F",
    " ": "00000000000000", "-": "0000001F000000", "/": "00010204081000",
    ":": "000C0C000C0C00", ".": "00000000000C0C", ",": "000000000C0408",
    "^": "040A1100000000", "(": "02040808080402", ")": "08040202020408",
    "?": "0E110102040004", "'": "0C040800000000", "#": "0A0A1F0A1F0A0A",
}  # fmt: skip
_FONT_CHARS = "".join(_FONT_HEX)
_FONT = np.array(
    [
        [[(int(h[2 * r : 2 * r + 2], 16) >> (4 - c)) & 1 for c in range(5)]
         for r in range(7)]
        for h in _FONT_HEX.values()
    ],
    dtype=bool,
)  # fmt: skip


def render_text(text: str, scale: int = 2) -> np.ndarray:
    """Rasterise text with the built-in 5x7 bitmap font.

    Lower-case letters are drawn as capitals, characters without a glyph as
    ``?``. Each glyph cell is 6x8 units (one unit of spacing), times `scale`.

    Parameters
    ----------
    text
        The text, one line.
    scale
        Pixels per font unit.

    Returns
    -------
    numpy.ndarray
        Boolean mask of shape ``(8 * scale, 6 * scale * len(text))``, True on ink.

    Examples
    --------
    >>> mask = render_text("ID 42", scale=1)
    >>> mask.shape, bool(mask.any())
    ((8, 30), True)
    """
    index = [_FONT_CHARS.find(ch) for ch in text.upper()]
    glyphs = _FONT[[i if i >= 0 else _FONT_CHARS.index("?") for i in index]]
    cells = np.zeros((len(text), 8, 6), dtype=bool)
    cells[:, :7, :5] = glyphs
    line = cells.transpose(1, 0, 2).reshape(8, 6 * len(text))
    return np.kron(line, np.ones((scale, scale), dtype=bool))


def _body_labels(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Label maps of an axial upper-abdomen phantom, superior to inferior.

    0 air, 1 fat, 2 soft tissue, 3 liver, 4 bone, 5 lung, 6 lesion, 7 aorta,
    8 kidney. Image left is the patient's right (LPS, as displayed).
    """
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")

    def ellipse(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2

    labels = np.zeros((n, size, size), dtype=np.uint8)
    r_liver = 1 + 0.08 * np.sin(3 * np.arctan2(y, x) + float(rng.uniform(0, 2 * np.pi)))
    body, inner = ellipse(0, 0.05, 0.86, 0.62), ellipse(0, 0.05, 0.79, 0.55)
    lungs = np.minimum(ellipse(-0.45, 0.2, 0.22, 0.28), ellipse(0.45, 0.2, 0.22, 0.28))
    kidneys = np.minimum(ellipse(-0.42, 0.33, 0.11, 0.16), ellipse(0.42, 0.33, 0.11, 0.16))
    lesion = ellipse(-0.38, -0.08, 1, 1)
    aorta = ellipse(0.07, 0.27, 0.045, 0.045) < 1
    vertebra = ellipse(0, 0.45, 0.085, 0.085) < 1
    canal = ellipse(0, 0.45, 0.05, 0.05) < 1
    process = ellipse(0, 0.37, 0.035, 0.035) < 1
    for k in range(n):
        t = k / max(n - 1, 1)  # 0 at the liver dome, 1 at the kidneys
        s2 = (1 + 0.03 * np.sin(2 * np.pi * t)) ** -2
        lab = labels[k]
        lab[body < s2] = 1
        lab[inner < s2] = 2
        lab[lungs < max(0.0, 1 - 2.5 * t) ** 2] = 5  # lung bases, posterior
        grow = 0.55 + 0.45 * np.sin(np.pi * min(1.0, 0.25 + t))
        lab[(ellipse(-0.33, -0.02, 0.38 * grow, 0.33 * grow) < r_liver) & (lab == 2)] = 3
        if 0.2 <= t <= 0.7:
            lab[lesion < (0.07 * (1 - abs(t - 0.45) * 2)) ** 2] = 6
        if t >= 0.5:
            lab[kidneys < 1] = 8
        lab[aorta] = 7
        lab[vertebra | process] = 4
        lab[canal] = 2
    return labels


# portal venous phase: enhancing liver, aorta and kidneys, hypodense lesion
_CT_HU = np.array([-1000, -100, 50, 110, 700, -850, 45, 160, 180], dtype=np.float32)
_MR_T1 = np.array([0, 900, 350, 460, 300, 15, 240, 80, 320], dtype=np.float32)


def _ct_pixels(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Stored CT values (HU + 1024), int16, -2000 outside the scan circle."""
    hu = _CT_HU[_body_labels(size, n, rng)]
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * 12
    stored = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.int16)
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    outside = (axis[:, None] ** 2 + axis[None, :] ** 2) > 1
    stored[:, outside] = -2000
    return stored


def _mr_pixels(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """T1-weighted magnitude, uint16 in 12 bits, with a smooth coil bias."""
    signal = _MR_T1[_body_labels(size, n, rng)]
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    bias = 1.15 - 0.3 * (axis[:, None] ** 2 + 0.5 * axis[None, :] ** 2)
    noise = rng.standard_normal((2, *signal.shape), dtype=np.float32) * 14
    magnitude = np.hypot(signal * bias + noise[0], noise[1])
    return np.clip(np.rint(magnitude), 0, 4095).astype(np.uint16)


def _cr_pixels(size: int, rng: np.random.Generator) -> np.ndarray:
    """PA chest radiograph, MONOCHROME1 (high values display dark), 12 bits."""
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(axis, axis, indexing="ij")
    img = np.full((size, size), 3900, dtype=np.float32)
    body = (x / (0.8 - 0.12 * (y < -0.5) * (-0.5 - y) * 2)) ** 2 + ((y - 0.1) / 1.15) ** 2 < 1
    img[body] = 1500
    for cx in (-0.38, 0.38):
        lung = ((x - cx) / 0.28) ** 2 + ((y + 0.02) / 0.62) ** 2 < 1
        img[lung] = 3000 - 250 * (y[lung] + 0.6)
        ribs = lung & (np.sin(y * 26 + np.abs(x) * 6) > 0.55)
        img[ribs] -= 550
    img[(np.abs(x) < 0.06 + 0.05 * np.clip(y, 0, 1)) & (y > -0.85)] = 900
    img[((x - 0.1) / 0.28) ** 2 + ((y - 0.3) / 0.25) ** 2 < 1] = 1100
    img = _box_blur(img, max(3, size // 64))
    img += rng.standard_normal(img.shape, dtype=np.float32) * 40
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16)


def _box_blur(img: np.ndarray, width: int) -> np.ndarray:
    """Separable moving average (edge-padded), to soften the phantom's edges."""
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (width // 2 + 1, width - width // 2 - 1)
        c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float64)
        img = (
            (
                np.take(c, range(width, c.shape[axis]), axis)
                - np.take(c, range(0, c.shape[axis] - width), axis)
            )
            / width
        ).astype(np.float32)
    return img


def _us_pixels(rng: np.random.Generator) -> np.ndarray:
    """A B-mode sector of liver with a vessel, grey, as RGB uint8 (480x640)."""
    rows, cols = np.mgrid[0:US_ROWS, 0:US_COLUMNS].astype(np.float32)
    dy, dx = rows - 70, cols - US_COLUMNS / 2
    radius, angle = np.hypot(dy, dx), np.arctan2(dx, dy)
    sector = (radius > 30) & (radius < 440) & (np.abs(angle) < np.radians(36))
    speckle = rng.rayleigh(1.0, size=(US_ROWS, US_COLUMNS)).astype(np.float32)
    tissue = 95 * speckle * np.exp(-(radius - 30) / 900)
    tissue[(dy - 250) ** 2 + (dx + 40) ** 2 < 35**2] *= 0.12
    tissue[(dy - 160) ** 2 / 1.8 + (dx - 60) ** 2 < 22**2] *= 1.9
    grey = np.where(sector, np.clip(tissue, 0, 255), 0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _draw(image: np.ndarray, text: str, row: int, column: int, scale: int) -> tuple[int, int]:
    """Burn white text into an image in place; return the box (rows, columns)."""
    mask = render_text(text, scale)
    h, w = mask.shape
    region = image[row : row + h, column : column + w]
    region[mask[: region.shape[0], : region.shape[1]]] = 255
    return h, w


# --------------------------------------------------------------------------- datasets


@dataclass
class _Study:
    patient: _Patient
    modality: str
    date: dt.date
    time: str
    key: str
    index: int
    accession: str
    study_id: str
    referring: _Person
    uid: str = ""


_STUDY_TEXT = {
    "CT": ("CT ABDOMEN WITH CONTRAST", "ABDOMEN", "Abdomen PV 5mm"),
    "MR": ("MRI LIVER", "ABDOMEN", "t1_se_tra"),
    "CR": ("CHEST PA", "CHEST", "Chest PA"),
    "US": ("US ABDOMEN", "ABDOMEN", "Abdomen"),
}
_SOP_CLASS = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "US": UltrasoundImageStorage,
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


class _Writer:
    """Builds and writes the instances of one archive."""

    def __init__(self, out: Path, seed: int, uids: _Uids, plant: _Planted) -> None:
        self.out, self.seed, self.uids, self.plant = out, seed, uids, plant
        self.files: list[str] = []
        self.burned: dict[str, list[BurnedInText]] = {}

    # ---- modules shared by every instance of a study
    def _patient_study(self, ds: Dataset, st: _Study) -> None:
        pt, p = st.patient, self.plant
        h = pt.hospital
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = p.person("names", pt.person)
        ds.PatientID = p("ids", pt.national_id)
        ds.IssuerOfPatientID = "TW-MOI"
        ds.TypeOfPatientID = "TEXT"
        ds.PatientBirthDate = p("birth_dates", pt.birth.strftime("%Y%m%d"))
        ds.PatientSex = pt.person.sex
        ds.PatientMotherBirthName = p.person("names", pt.mother)
        ds.EthnicGroup = "Han Taiwanese"
        ds.PatientAddress = p("addresses", pt.address_zh)
        ds.PatientTelephoneNumbers = [p("phones", pt.mobile), p("phones", pt.home)]

        chart = Dataset()
        chart.PatientID = p("ids", pt.chart)
        chart.IssuerOfPatientID = p("other", f"{h.code} Chart No.")
        chart.TypeOfPatientID = "TEXT"
        facility = Dataset()
        facility.LocalNamespaceEntityID = p("other", h.name)
        qualifiers = Dataset()
        qualifiers.AssigningFacilitySequence = Sequence([facility])
        chart.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
        nhi = Dataset()
        nhi.PatientID = p("ids", pt.nhi_card)
        nhi.IssuerOfPatientID = "TW-NHI"
        nhi.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = Sequence([chart, nhi])

        ref_patient = Dataset()
        ref_patient.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.1.1"
        ref_patient.ReferencedSOPInstanceUID = self.uids(f"patient/{pt.index}/record")
        ds.ReferencedPatientSequence = Sequence([ref_patient])

        birth_roc, _ = _roc(pt.birth)
        study_roc, study_slash = _roc(st.date)
        p("other", birth_roc)
        p("other", study_roc)
        p("other", study_slash)
        p("phones", pt.mobile.replace("-", ""))
        p("names", pt.person.latin)
        p("names", pt.person.chinese)
        ds.PatientComments = p("other", f"Emergency contact: mother {pt.mother.latin}, {pt.home}")
        p("names", pt.mother.latin)
        ds.AdditionalPatientHistory = p(
            "other",
            f"{pt.person.chinese} ({pt.person.latin}), 生日{birth_roc}, "
            f"手機{pt.mobile.replace('-', '')}. Hx: {pt.history}.",
        )
        ds.Occupation = p("other", pt.occupation)
        before_birthday = (st.date.month, st.date.day) < (pt.birth.month, pt.birth.day)
        age = st.date.year - pt.birth.year - before_birthday
        ds.PatientAge = f"{age:03d}Y"
        ds.PatientSize, ds.PatientWeight = _ds(pt.size), _ds(pt.weight)

        ds.StudyInstanceUID = st.uid
        ds.StudyDate = st.date.strftime("%Y%m%d")
        ds.StudyTime = st.time
        ds.AccessionNumber = p("ids", st.accession)
        ds.StudyID = p("ids", st.study_id)
        ds.StudyDescription = _STUDY_TEXT[st.modality][0]
        ds.ReferringPhysicianName = p.person("other", st.referring)
        ds.ReferringPhysicianIdentificationSequence = Sequence([self._person_id(h, st.referring)])
        reader = pt.staff[1]
        ds.NameOfPhysiciansReadingStudy = p.person("other", reader)
        ds.StudyComments = p(
            "other", f"{pt.person.latin} {pt.national_id} {study_roc} {pt.history} 追蹤"
        )

        issuer = Dataset()
        issuer.LocalNamespaceEntityID = p("other", h.name_zh)
        request = Dataset()
        request.AccessionNumber = st.accession
        request.IssuerOfAccessionNumberSequence = Sequence([issuer])
        request.StudyInstanceUID = st.uid
        request.RequestedProcedureID = p("ids", f"RP{st.accession}")
        request.ScheduledProcedureStepID = p("ids", f"SPS{st.study_id}")
        request.RequestedProcedureDescription = _STUDY_TEXT[st.modality][0]
        request.RequestingPhysician = st.referring.pn
        request.ReasonForTheRequestedProcedure = p("other", f"{pt.history}; pt {pt.person.latin}")
        ds.RequestAttributesSequence = Sequence([request])

        ds.InstitutionName = p("other", h.name)
        ds.InstitutionAddress = p("other", h.address)
        ds.InstitutionalDepartmentName = p("other", f"{h.name_zh} 放射科")
        ds.Manufacturer = "MIDA Synthetic"
        ds.ManufacturerModelName = f"Sample {st.modality}"
        ds.SoftwareVersions = "mida-sample 1"
        ds.TimezoneOffsetFromUTC = "+0800"

    def _person_id(self, h: _Hospital, person: _Person) -> Dataset:
        item = Dataset()
        staff_no = self.plant("ids", f"{h.code}{_serial(h.code, person.pn)}")
        item.PersonIdentificationCodeSequence = Sequence(
            [_code(staff_no, f"99{h.code}", person.latin)]
        )
        self.plant("other", person.latin)
        item.InstitutionName = h.name
        item.PersonTelephoneNumbers = self.plant("phones", h.phone)
        return item

    def _private(self, ds: Dataset, pt: _Patient, st: _Study) -> None:
        p = self.plant
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(0x10, "LO", p("names", pt.person.upper))
        block.add_new(0x11, "LO", pt.national_id)
        block.add_new(0x12, "LO", pt.mobile)
        block.add_new(0x13, "LT", p("addresses", pt.address_en))
        block.add_new(0x14, "LO", st.accession)
        # A private sequence three deep, as PACS vendors nest their own records.
        deepest = Dataset()
        inner = deepest.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        inner.add_new(0x30, "LO", pt.person.chinese)
        inner.add_new(0x31, "LO", pt.home)
        inner.add_new(0x32, "LO", pt.national_id)
        middle = Dataset()
        mid = middle.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        mid.add_new(0x21, "LO", pt.national_id)
        mid.add_new(0x22, "SQ", Sequence([deepest]))
        top = Dataset()
        outer = top.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        outer.add_new(0x20, "PN", pt.person.pn)
        outer.add_new(0x23, "SQ", Sequence([middle]))
        block.add_new(0x40, "SQ", Sequence([top]))

    def _series(self, ds: Dataset, st: _Study, number: int, uid: str, time: str) -> None:
        pt, p = st.patient, self.plant
        h = pt.hospital
        ds.Modality = st.modality
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = number
        ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ds.StudyDate
        ds.InstanceCreationDate = ds.StudyDate
        ds.SeriesTime = time
        ds.SeriesDescription = _STUDY_TEXT[st.modality][2]
        ds.ProtocolName = _STUDY_TEXT[st.modality][2]
        ds.BodyPartExamined = _STUDY_TEXT[st.modality][1]
        ds.PerformingPhysicianName = p.person("other", pt.staff[2])
        ds.OperatorsName = p.person("other", pt.staff[3])
        ds.StationName = p("other", f"{h.code}-{st.modality}01")
        ds.DeviceSerialNumber = p("other", st.modality + _serial(h.code, st.modality))

    def _instance(
        self, ds: Dataset, st: _Study, sop_uid: str, number: int, time: str, comment: str
    ) -> None:
        ds.SOPClassUID = _SOP_CLASS[st.modality]
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = number
        ds.AcquisitionTime = ds.ContentTime = ds.InstanceCreationTime = time
        ds.ImageComments = self.plant("other", comment)

    def _save(self, ds: Dataset, rel: str) -> None:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        self.files.append(rel)

    # ---- one study
    def write_study(self, st: _Study, sizes: dict[str, tuple[int, int]]) -> Iterator[str]:
        """Write the series of a study, yielding each file's relative path."""
        folder = f"{st.patient.index:03d}/{st.index}"
        series_uid = self.uids(f"{st.key}/series/1")
        h, m, s = int(st.time[:2]), int(st.time[2:4]), int(st.time[4:])
        start = dt.datetime(2000, 1, 1, h, m, s) + dt.timedelta(minutes=3)
        comment_date = _roc(st.date)[1]
        comment = f"{st.patient.person.upper} {comment_date} {_STUDY_TEXT[st.modality][0]}"
        n, size = sizes[st.modality]
        sop_uids = [self.uids(f"{st.key}/series/1/instance/{k + 1}") for k in range(n)]
        pix_rng = np.random.default_rng([self.seed, st.patient.index, st.index])
        pixels = self._pixels(st.modality, size, n, pix_rng)
        cross_section = st.modality in ("CT", "MR")
        frame_uid = self.uids(f"{st.key}/frame-of-reference") if cross_section else ""
        event_uid = self.uids(f"{st.key}/irradiation-event") if st.modality == "CT" else ""
        z0 = float(pix_rng.uniform(-160, -40))
        for k in range(n):
            ds = Dataset()
            self._patient_study(ds, st)
            self._series(ds, st, 1, series_uid, start.strftime("%H%M%S"))
            t = (start + dt.timedelta(seconds=2 * k)).strftime("%H%M%S")
            self._instance(ds, st, sop_uids[k], k + 1, t, comment)
            self._private(ds, st.patient, st)
            for creator, group, byte, vr, value in VENDOR_PRIVATE.get(st.modality, ()):
                ds.private_block(group, creator, create=True).add_new(byte, vr, value)
            rel = f"{folder}/1/{k + 1:04d}.dcm"
            if cross_section:
                self._cross_section(ds, st.modality, pixels[k], z0, k, frame_uid)
                if n > 1:
                    ref = Dataset()
                    ref.ReferencedSOPClassUID = _SOP_CLASS[st.modality]
                    ref.ReferencedSOPInstanceUID = sop_uids[k + 1 if k + 1 < n else k - 1]
                    ds.ReferencedImageSequence = Sequence([ref])
                if st.modality == "CT":
                    ds.IrradiationEventUID = event_uid
            elif st.modality == "CR":
                self._cr(ds, pixels[0])
            else:
                self._us(ds, pixels[0], st, rel)
            self._save(ds, rel)
            yield rel

    def _pixels(self, modality: str, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
        if modality == "CT":
            return _ct_pixels(size, n, rng)
        if modality == "MR":
            return _mr_pixels(size, n, rng)
        if modality == "CR":
            return _cr_pixels(size, rng)[None]
        return _us_pixels(rng)[None]

    @staticmethod
    def _grey(ds: Dataset, pixels: np.ndarray, photometric: str, bits: int) -> None:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
        ds.add_new(0x7FE00010, "OW", pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())

    def _cross_section(
        self, ds: Dataset, modality: str, pixels: np.ndarray, z0: float, k: int, frame: str
    ) -> None:
        size = pixels.shape[0]
        fov, thickness = (360.0, 5.0) if modality == "CT" else (380.0, 6.0)
        spacing = fov / size
        z = z0 - k * thickness
        corner = -(size - 1) / 2 * spacing
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.ImagePositionPatient = [_ds(corner), _ds(corner), _ds(z)]
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(thickness)
        ds.SliceLocation = _ds(z)
        ds.AcquisitionNumber = 1
        if modality == "CT":
            self._grey(ds, pixels, "MONOCHROME2", 16)
            ds.add_new(0x00280120, "SS", -2000)  # PixelPaddingValue, GE-style
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
            ds.KVP = "120"
            ds.XRayTubeCurrent = 200
            ds.ExposureTime = 500
            ds.ConvolutionKernel = "STANDARD"
            ds.DataCollectionDiameter = ds.ReconstructionDiameter = _ds(fov)
            ds.GantryDetectorTilt = "0"
            ds.RotationDirection = "CW"
        else:
            self._grey(ds, pixels, "MONOCHROME2", 12)
            ds.WindowCenter, ds.WindowWidth = "450", "900"
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.SequenceName = "se2d1"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "500", "15", 1
            ds.ImagedNucleus = "1H"
            ds.MagneticFieldStrength = "1.5"

    def _cr(self, ds: Dataset, pixels: np.ndarray) -> None:
        self._grey(ds, pixels, "MONOCHROME1", 12)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.ViewPosition = "PA"
        ds.PatientOrientation = ["L", "F"]
        ds.ImagerPixelSpacing = ["0.8", "0.8"]
        ds.KVP = "110"

    def _us(self, ds: Dataset, pixels: np.ndarray, st: _Study, rel: str) -> None:
        pt = st.patient
        stamp = f"{st.date:%Y/%m/%d} {st.time[:2]}:{st.time[2:4]}:{st.time[4:]}"
        lines = (pt.person.upper, f"ID: {pt.national_id}", stamp)
        boxes = [(text, 6 + 20 * i, 8) for i, text in enumerate(lines)]
        boxes.append((pt.hospital.code, 6, US_COLUMNS - 8 - 12 * len(pt.hospital.code)))
        for text, row, column in boxes:
            h, w = _draw(pixels, text, row, column, 2)
            self.burned.setdefault(rel, []).append(BurnedInText(text, row, column, h, w))
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.Rows, ds.Columns = US_ROWS, US_COLUMNS
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
        ds.add_new(0x7FE00010, "OB", pixels.tobytes())
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
        ds.LossyImageCompression = "00"
        ds.BurnedInAnnotation = "YES"
        ds.PatientOrientation = ""


# --------------------------------------------------------------------------- entry point


def _plan(rng: np.random.Generator, pt: _Patient, seq: Iterator[int]) -> list[_Study]:
    first = dt.date(2018, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))

    def when(offset: int) -> tuple[dt.date, str]:
        minutes = int(rng.integers(8 * 60, 18 * 60))
        secs = int(rng.integers(0, 60))
        return first + dt.timedelta(days=offset), f"{minutes // 60:02d}{minutes % 60:02d}{secs:02d}"

    plan = [("CT", when(0)), ("MR", when(int(rng.integers(3, 21)))), ("CR", when(0))]
    if pt.index % 2 == 0:
        plan.append(("CT", when(int(rng.integers(90, 400)))))
    if pt.index % 3 == 0:
        plan.append(("US", when(-int(rng.integers(1, 11)))))
    plan.sort(key=lambda item: (item[1][0], item[1][1]))
    studies = []
    h = pt.hospital
    for index, (modality, (date, time)) in enumerate(plan, start=1):
        st = _Study(
            pt,
            modality,
            date,
            time,
            key=f"patient/{pt.index}/study/{index}",
            index=index,
            accession=f"{h.code}{date:%y%m%d}{next(seq):04d}",
            study_id=_digits(rng, 7),
            referring=pt.staff[0] if modality != "US" else pt.staff[4],
        )
        studies.append(st)
    return studies


def generate(
    out: Path,
    patients: int = 5,
    *,
    seed: int = 0,
    ct_slices: int = 8,
    ct_size: int = 512,
    mr_slices: int = 4,
    mr_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> SampleManifest:
    """Write a synthetic archive of DICOM studies that carry planted PHI.

    Per patient ``i``: a CT study (an axial series of `ct_slices` int16
    slices, RescaleIntercept -1024), an MR study (`mr_slices` T1 slices), a
    512x512 MONOCHROME1 CR chest; a second CT study 3-13 months later when
    ``i`` is even; a 480x640 RGB ultrasound image with burned-in name, ID and
    date when ``i`` is a multiple of 3. Files are Explicit VR Little Endian,
    ``SpecificCharacterSet`` ``ISO_IR 192``, laid out as
    ``out/<patient:03d>/<study>/<series>/<instance:04d>.dcm`` (no PHI in
    paths); studies are numbered in date order.

    Parameters
    ----------
    out
        Output folder; created if missing, and must be empty if it exists.
    patients
        Number of patients (at least 1).
    seed
        Non-negative seed. The same arguments give byte-identical files.
    ct_slices, ct_size
        Slices per CT series and their rows = columns.
    mr_slices, mr_size
        Slices per MR series and their rows = columns.
    progress
        Called after each file with ``(files_written, files_total)``.

    Returns
    -------
    SampleManifest
        Also written to ``out/phi_manifest.json``. That file holds the
        planted PHI itself: keep it out of anything that is ingested.

    Raises
    ------
    ValueError
        If an argument is out of range.
    FileExistsError
        If `out` exists and is not empty.

    Examples
    --------
    >>> import tempfile, pathlib, pydicom
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "sample"
    >>> m = generate(out, patients=1, ct_slices=2, ct_size=64, mr_slices=1, mr_size=64)
    >>> m.counts
    {'CR': 1, 'CT': 4, 'MR': 1, 'US': 1}
    >>> ds = pydicom.dcmread(out / m.files[0])
    >>> ds.SpecificCharacterSet, str(ds.PatientName) in m.phi["names"]
    ('ISO_IR 192', True)
    """
    if patients < 1:
        raise ValueError("patients must be at least 1")
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    for name, value, least in (
        ("ct_slices", ct_slices, 1), ("mr_slices", mr_slices, 1),
        ("ct_size", ct_size, 32), ("mr_size", mr_size, 32),
    ):  # fmt: skip
        if value < least:
            raise ValueError(f"{name} must be at least {least}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose a new folder or empty it first")
    out.mkdir(parents=True, exist_ok=True)

    parameters = {
        "patients": patients, "ct_slices": ct_slices, "ct_size": ct_size,
        "mr_slices": mr_slices, "mr_size": mr_size,
    }  # fmt: skip
    key = f"{seed}/" + "/".join(f"{k}={v}" for k, v in parameters.items())
    rng = np.random.default_rng(seed)
    uids, plant = _Uids(key), _Planted()
    deck = _NameDeck(rng)
    staff = {h.code: [deck.draw("MF"[i % 2]) for i in range(5)] for h in _HOSPITALS}
    used: set[str] = set()
    accession_seq = iter(range(1, 10**9))
    studies: list[_Study] = []
    for i in range(patients):
        pt = _make_patient(rng, i, deck, used, staff)
        studies.extend(_plan(rng, pt, accession_seq))
    for st in studies:
        st.uid = uids(st.key)

    sizes = {"CT": (ct_slices, ct_size), "MR": (mr_slices, mr_size), "CR": (1, 512), "US": (1, 0)}
    total = sum(sizes[st.modality][0] for st in studies)
    writer = _Writer(out, seed, uids, plant)
    records: list[SampleStudy] = []
    counts: dict[str, int] = {}
    for st in studies:
        written = []
        for rel in writer.write_study(st, sizes):
            written.append(rel)
            if progress is not None:
                progress(len(writer.files), total)
        counts[st.modality] = counts.get(st.modality, 0) + len(written)
        records.append(
            SampleStudy(
                patient=st.patient.index,
                PatientID=st.patient.national_id,
                StudyInstanceUID=st.uid,
                StudyDate=f"{st.date:%Y%m%d}",
                Modality=st.modality,
                AccessionNumber=st.accession,
                files=written,
            )
        )
    for uid in uids.issued:
        plant("uids", uid)
    manifest = SampleManifest(
        seed=seed,
        parameters=parameters,
        counts=dict(sorted(counts.items())),
        files=sorted(writer.files),
        studies=sorted(records, key=lambda r: r.files[0]),
        phi={c: sorted(plant.phi[c]) for c in PHI_CATEGORIES},
        burned_in=dict(sorted(writer.burned.items())),
    )
    manifest.write(out / MANIFEST_NAME)
    return manifest


__all__ = [
    "MANIFEST_NAME",
    "PHI_CATEGORIES",
    "PRIVATE_CREATOR",
    "PRIVATE_GROUP",
    "VENDOR_PRIVATE",
    "BurnedInText",
    "SampleManifest",
    "SampleStudy",
    "generate",
    "render_text",
]
