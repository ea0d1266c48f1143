"""Free-text cleaning for the Clean Descriptors and Clean Structured Content options.

PS3.15 E.3.5 (Clean Descriptors) and E.3.6 (Clean Structured Content) ask
that description, comment and SR text values be kept with their identifying
content removed. :class:`FreeTextCleaner` does that for the English,
Traditional Chinese and mixed text of Taiwanese radiology: it finds spans of
identifying text with compiled regular expressions and word lists, removes
them, and tidies what is left ("CT chest w/ contrast for 陳美玲" becomes
"CT chest w/ contrast").

Each detector reports a kind code:

==========  ===============================================================
``KNOWN``   a value of the same dataset (patient name parts, IDs...) given
            in ``known``; found anywhere, case-insensitively
``TWID``    a Taiwan national ID or Resident Certificate number with a valid
            check digit (:func:`mida.dicom.twid.is_valid`), the old
            two-letter resident form, or any letter + 9 digits after an ID
            label
``MRN``     a chart / medical-record / accession number after its label
            (``病歷號 1234567``, ``MRN: 00123456``, ``chart no. 12345678``)
``NUM``     any other run of 7 or more digits not followed by a unit
``NAME``    a Chinese name (common Taiwanese surname + 1-2 given-name
            characters, with a stop-list of clinical words), a romanised
            Taiwanese name (``Chen Mei-Ling``, ``Lin, Wen-Hsiung``,
            ``CHEN^MEI LING``), any name in DICOM form (``WATSON^JOHN``),
            or a person after an honorific (``Dr. Wang``,
            ``王醫師``, ``主治醫師: 林``)
``DATE``    Minguo dates (``民國112年3月4日``, ``112/03/04``, ``112.03.04``,
            ``1120304`` after a date word) and Gregorian ones
            (``2023-03-04``, ``20230304``, ``2023/3/4``, ``04-Mar-2023``,
            ``March 4, 2023``)
``PHONE``   Taiwanese mobile and landline numbers, with ``ext.``/``分機``
``EMAIL``   e-mail addresses
``URL``     web addresses
``ADDR``    Taiwanese addresses, in Chinese (…市…區…路…段…巷…弄…號…樓) and
            romanised (``No. 7, Lane 12, Heping E. Rd., Taipei``), with the
            postal code
==========  ===============================================================

The result carries the spans and kinds only: nothing that could reach a log
ever holds the removed text.

Examples
--------
>>> cleaner = FreeTextCleaner()
>>> cleaner.clean("CT chest w/ contrast for Chen Mei-Ling").text
'CT chest w/ contrast'
>>> r = cleaner.clean("高血壓病人陳美玲 民國112年3月4日 胸部X光")
>>> r.text, [s.kind for s in r.removed]
('高血壓病人 胸部X光', ['NAME', 'DATE'])
>>> cleaner.clean("MRN: 00123456, AX T2 FS 5 mm").text
'AX T2 FS 5 mm'
>>> cleaner.clean("follow-up of MEILING nodule", known=["Meiling"]).text
'follow-up of nodule'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from importlib.resources import files
from typing import NamedTuple

from mida.dicom import twid


def _words(name: str) -> frozenset[str]:
    """Read a word list of ``mida/deid/data`` (whitespace-separated, ``#`` comments)."""
    text = (files("mida.deid") / "data" / name).read_text(encoding="utf-8")
    return frozenset(
        w for line in text.splitlines() if not line.startswith("#") for w in line.split()
    )


class Span(NamedTuple):
    """One removed span of the original text: ``text[start:end]``."""

    kind: str
    start: int
    end: int


class CleanResult(NamedTuple):
    """The cleaned text and where identifying content was removed."""

    text: str
    removed: list[Span]


_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"

# ---------------------------------------------------------------- word lists

SURNAMES_ZH: frozenset[str] = _words("freetext_surnames_zh.txt")
"""Common Taiwanese surnames (single and compound), after the 內政部 ranking."""

# Clinical and everyday words that begin with a surname character.
CLINICAL_ZH: frozenset[str] = _words("freetext_clinical_zh.txt")
"""Stop-list: words starting with a surname character that are not names."""

# Characters that do not occur as given names in the contexts we care about:
# organs, findings, function words. A candidate name whose given-name part
# starts with one is not a name (陳舊, 高密度, 周圍...).
_NOT_GIVEN = _words("freetext_not_given_zh.txt")

_NAME_SUFFIX_ZH = (
    "醫師|醫生|先生|小姐|女士|太太|護理師|技術師|放射師|主任|教授|院長|醫檢師|同學|阿姨|伯伯|君"
)
_NAME_INTRO_ZH = (
    "病人|患者|病患|個案|姓名|家屬|聯絡人|母親|父親|配偶|兒子|女兒|醫師|主治醫師|報告醫師|申請醫師|"
    "開單醫師|轉診醫師|判讀醫師|技術師|放射師|護理師|檢查者|操作者|簽名|記錄者|由|給|交|請"
)

SURNAMES_LATIN: frozenset[str] = _words("freetext_surnames_latin.txt")
"""Romanised Taiwanese surnames (Wade-Giles, Tongyong, Hanyu Pinyin, Cantonese)."""

_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_UNITS = (
    r"(?:mm|cm|m|km|ml|mL|cc|l|L|mg|g|kg|ug|mcg|µg|mGy|Gy|cGy|mSv|Sv|MBq|mCi|Bq|HU|ms|s|sec|min|"
    r"h|hr|kV|kVp|mA|mAs|T|Hz|kHz|MHz|%|x|px|pixels?|slices?|images?|frames?|bytes?|KB|MB|GB|"
    r"毫米|公分|公釐|毫升|毫克|公克|公斤|秒|分鐘|次)"
)

# ---------------------------------------------------------------- detectors

_B = r"(?<![A-Za-z0-9])"  # a Latin/digit boundary before
_E = r"(?![A-Za-z0-9])"  # and after

_TWID = re.compile(_B + r"([A-Za-z])([1289]\d{8}|[A-Da-d]\d{8})" + _E)
_ID_LABEL = re.compile(
    r"(?:身分證(?:字號|號碼|號)?|身份證(?:字號|號碼|號)?|居留證(?:號碼|號)?|統一證號|"
    r"(?<![A-Za-z])(?:national\s+)?ID(?:\s*(?:no|number|#))?\.?)\s*[:：#]?\s*"
    r"([A-Za-z][A-Za-z0-9]\d{8})" + _E,
    re.IGNORECASE,
)
_MRN = re.compile(
    r"(?:病歷(?:號碼|號|編號)?|病人編號|病患編號|檢查號(?:碼)?|單號|"
    r"(?<![A-Za-z])(?:MRN|MR\s*(?:no|number|#)|chart\s*(?:no|number|#)|medical\s+record"
    r"(?:\s*(?:no|number|#))?|hospital\s*(?:no|number)|patient\s*(?:id|no|number)|"
    r"acc(?:ession)?\s*(?:no|number|#)?|case\s*(?:no|number))\.?)"
    r"\s*[:：#]?\s*(?:no\.?\s*)?([A-Za-z]{0,4}-?\d{4,}[A-Za-z0-9-]*)" + _E,
    re.IGNORECASE,
)
_LONG_NUM = re.compile(
    _B + r"[A-Za-z]{0,4}\d{7,}[A-Za-z0-9]*" + r"(?![A-Za-z0-9.,]?\d)(?!\s?" + _UNITS + _E + r")"
)

_DATE_PARTS = (
    r"民國\s*\d{2,3}\s*年(?:\s*\d{1,2}\s*月(?:\s*\d{1,2}\s*日)?)?",
    r"(?<!\d)\d{2,4}\s*年\s*\d{1,2}\s*月(?:\s*\d{1,2}\s*日)?",
    # A colon next to a date is punctuation ("2024-03-05: mass", "Date:2024-03-05"); next to
    # a digit it is a time or a ratio.
    r"(?<![\d/.])(?<!\d:)(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])"
    r"(?![\d/.])(?!:\d)",
    r"(?<![\d/.])(?<!\d:)(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)\d{2}(?![\d/.])",
    r"(?<![\d/.])(?<!\d:)(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/(?:19|20)\d{2}(?![\d/.])",
    r"(?<![\d/.])(?<!\d:)(?:[4-9]\d|1[01]\d)[/.](?:0?[1-9]|1[0-2])[/.](?:0?[1-9]|[12]\d|3[01])"
    r"(?![\d/.])(?!:\d)",
    r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)",
    _B + r"\d{1,2}[-\s]" + _MONTHS + r"\.?[-\s,]\s*(?:19|20)\d{2}" + _E,
    _B + _MONTHS + r"\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{2}" + _E,
    r"(?:(?:檢查)?日期|生日|出生|檢查日|於|date|DOB|on)\s*[:：]?\s*(?:1[01]\d|[4-9]\d)(?:0[1-9]|1[0-2])"
    r"(?:0[1-9]|[12]\d|3[01])(?!\d)",
)
_DATE = re.compile("|".join(f"(?:{p})" for p in _DATE_PARTS), re.IGNORECASE)

_PHONE_LABEL = (
    r"(?:(?:(?<![A-Za-z])(?:tel|phone|mobile|cell|fax|contact)\.?|聯絡電話|行動電話|電話|手機|傳真|"
    r"市話)\s*[:：]?\s*)?"
)
_PHONE = re.compile(
    _PHONE_LABEL + r"(?<![\d+])(?:"
    r"(?:\+?886[-\s]?|0)9\d{2}[-\s]?\d{3}[-\s]?\d{3}"  # mobile
    r"|(?:\+?886[-\s]?\(?\d{1,2}\)?|\(0\d{1,2}\)|0\d{1,2})[-\s]?\d{3,4}[-\s]?\d{4}"  # landline
    r")(?:\s*(?:ext\.?|x|#|分機|轉)\s*\d{1,5})?(?!\d)"
    r"|(?<![A-Za-z])(?:ext\.?|分機)\s*\d{2,5}(?!\d)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"(?:https?://|www\.)[^\s,;，；、]+", re.IGNORECASE)

_ZH_NUM = r"[0-9０-９一二三四五六七八九十]"
_ADDR_ZH = re.compile(
    r"(?:\d{3}(?:\d{2,3})?\s?)?"
    r"(?:(?:[" + _CJK + r"]{2}[市縣])(?:[" + _CJK + r"]{1,3}?[區鄉鎮市])?)?"
    r"(?:[" + _CJK + r"]{1,3}[村里](?:\d+鄰)?)?"
    r"[" + _CJK + r"0-9]{1,6}?(?:路|街|大道)"
    r"(?:" + _ZH_NUM + r"{1,2}段)?(?:\d+巷)?(?:\d+弄)?"
    r"(?:\d+(?:-\d+)?(?:之\d+)?號)(?:\d+樓(?:之\d+)?)?(?:[Bb]?\d+室)?"
    r"|(?:\d{3}(?:\d{2,3})?\s?)?[" + _CJK + r"]{2}[市縣][" + _CJK + r"]{1,3}?[區鄉鎮]"
    r"(?:[" + _CJK + r"0-9]{1,6}?(?:路|街|大道)(?:" + _ZH_NUM + r"{1,2}段)?)?"
)
_CITY_EN = (
    r"(?:New\s+Taipei|Taipei|Taoyuan|Taichung|Tainan|Kaohsiung|Keelung|Hsinchu|Chiayi|Miaoli|"
    r"Changhua|Nantou|Yunlin|Pingtung|Yilan|Ilan|Hualien|Taitung|Penghu|Kinmen|Lienchiang)"
    r"(?:\s+(?:City|County))?"
)
_WORD_EN = r"(?:[A-Z][a-z'’]*\.?|\d+(?:st|nd|rd|th))"
_ADDR_PART = (
    r"(?:(?:Ln|Lane|Aly|Alley)\.?\s*\d+|Sec\.?\s*\d+|"
    + _WORD_EN
    + r"(?:\s"
    + _WORD_EN
    + r"){0,3}?\s(?:Rd|Road|St|Street|Ave|Avenue|Blvd|Boulevard)\.?"
    r"|" + _WORD_EN + r"(?:\s" + _WORD_EN + r")?\s(?:Dist|District|Township|Village|Vil)\.?"
    r"|" + _CITY_EN + r"|\d{3,6}|Taiwan(?:\s*\(R\.O\.C\.\))?|R\.O\.C\.)"
)
_ADDR_EN = re.compile(
    _B + r"(?:(?:\d{1,2}F\.?(?:-\d+)?|Rm\.?\s*\d+)(?:,\s*|\s+))?"
    r"(?:No\.\s*\d+(?:-\d+)?|(?:Ln|Lane|Aly|Alley)\.?\s*\d+)"
    r"(?:(?:,\s*|\s+)" + _ADDR_PART + r")+"
)

_SURNAME_ZH_RE = "|".join(sorted(SURNAMES_ZH, key=len, reverse=True))
_NAME_ZH = re.compile(
    r"(?P<intro>" + _NAME_INTRO_ZH + r")?\s*[:：]?\s*(?P<sur>" + _SURNAME_ZH_RE + r")"
)
_SUFFIX_ZH = re.compile(_NAME_SUFFIX_ZH)
_SYLLABLE = (
    r"(?:chh|ch|sh|zh|ts|tz|hs|ph|th|kh|ng|[bpmfdtnlgkhjqxrzcsyw])?"
    r"(?:[aeiouv]{1,3})(?:ng|n|r|h|m)?"
)
_SURNAME_EN_RE = "|".join(sorted(SURNAMES_LATIN, key=len, reverse=True))
_SYL_RE = re.compile(rf"(?i:{_SYLLABLE})")
_NAME_EN = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    # CHEN^MEI LING, Chen^Mei-Ling (PN style)
    rf"(?i:{_SURNAME_EN_RE})\^[A-Za-z][A-Za-z -]{{0,20}}[A-Za-z]"
    # Chen Mei-Ling, CHEN MEI-LING, Lin, Wen-Hsiung, Chen Mei Ling
    rf"|(?:(?i:{_SURNAME_EN_RE})),?\s+(?:[A-Z](?i:{_SYLLABLE})[-‐][A-Za-z](?i:{_SYLLABLE})"
    rf"|[A-Z](?i:{_SYLLABLE})(?:\s+[A-Z](?i:{_SYLLABLE}))?)"
    # Mei-Ling Chen
    rf"|[A-Z](?i:{_SYLLABLE})[-‐][A-Za-z](?i:{_SYLLABLE})\s+(?:(?i:{_SURNAME_EN_RE}))"
    r")(?![A-Za-z0-9])"
)
_PN_CARET = re.compile(r"(?<![A-Za-z0-9])[A-Za-z][A-Za-z'’.-]*(?:\^[A-Za-z'’.-]*)+")
"""Any name written the DICOM way (``WATSON^JOHN``): carets occur in no clinical text."""
_NUMBERS_CUE = re.compile(r"[0-9@]|//|www", re.IGNORECASE)
_LATIN_WORD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]+")
_HYPHENS = frozenset("-‐")
_HONORIFIC_EN = re.compile(
    r"(?<![A-Za-z])(?:Dr|Drs|Mr|Mrs|Ms|Miss|Prof|Nurse)\.?\s+"
    r"[A-Z][A-Za-z'’-]+(?:,?\s+[A-Z][A-Za-z'’-]+)?(?![A-Za-z])"
)
_HONORIFIC_EN_AFTER = re.compile(r"^(?:\s*,?\s*(?:MD|M\.D\.|PhD|RN|RT))(?![A-Za-z])")

# ---------------------------------------------------------------- tidying

_SPACES = re.compile(r"[ \t\u3000]{2,}")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)\]，。；：、）])")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:/-]?\s*\)|（\s*）|\[\s*\]")
_REPEATED_SEP = re.compile(r"([,;，；、])(?:\s*[,;，；、])+")
_DANGLING_WORDS = frozenset(
    {"for", "of", "by", "per", "from", "to", "re", "pt", "patient", "dr", "mr", "mrs", "ms", "and",
     "with"}
)  # fmt: skip
_SEPARATORS = " \t\u3000,;:：，；、/-"
_DANGLING_START = re.compile(r"^[\s,;:：，；、/-]+")


def _tidy(text: str) -> str:
    text = _EMPTY_BRACKETS.sub("", text)
    text = _REPEATED_SEP.sub(r"\1", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _DANGLING_START.sub("", text)
    while True:  # "CT chest for" once the name after "for" is gone
        text = text.rstrip(_SEPARATORS)
        head, _, last = text.rpartition(" ")
        if last.rstrip(".").lower() not in _DANGLING_WORDS:
            return text
        text = head


# ---------------------------------------------------------------- known values

_SPLIT_KNOWN = re.compile(r"[\^=\\]")


def _variants(value: str) -> set[str]:
    out: set[str] = set()
    for single in value.split("\\"):
        for group in single.split("="):  # PN: alphabetic, ideographic, phonetic
            parts = [p.strip() for p in group.split("^") if p.strip()]
            # 史密斯: a one-character surname alone is too common to remove
            out.add("".join(parts) if parts and not parts[0].isascii() else " ".join(parts))
    for part in [value, *_SPLIT_KNOWN.split(value)]:
        part = part.strip(" \x00")
        if not part:
            continue
        out.add(part)
        if "-" in part:
            out.add(part.replace("-", " "))
            out.add(part.replace("-", ""))
    # Too short to be safely removed everywhere: one letter, two-character
    # codes, numbers under four digits (they recur in measurements).
    return {
        v
        for v in out
        if len(v) >= 2
        and not (v.isascii() and len(v) < 3 and not v.isalpha())
        and not (v.isdigit() and len(v) < 4)
    }


@lru_cache(maxsize=64)
def _known_pattern(values: frozenset[str]) -> re.Pattern[str] | None:
    """One alternation of the known values, longest first (cached per patient)."""
    forms: set[str] = set()
    for value in values:
        forms |= _variants(value)
    if not forms:
        return None
    latin: list[str] = []
    cjk: list[str] = []
    for form in sorted(forms, key=len, reverse=True):
        body = r"\s+".join(re.escape(w) for w in form.split())
        # Latin and digit values must stand alone; CJK values are found inside words.
        (latin if form[0].isascii() and form[-1].isascii() else cjk).append(body)
    alts = [f"{_B}(?:{'|'.join(latin)}){_E}"] if latin else []
    return re.compile("|".join(alts + cjk), re.IGNORECASE)


# ---------------------------------------------------------------- the cleaner


class FreeTextCleaner:
    """Remove identifying content from free text, keeping the clinical words.

    The cleaner has no state between calls; build one and reuse it.

    Examples
    --------
    >>> FreeTextCleaner().clean("US abdomen, tel 0912-345-678, 2023-03-04").text
    'US abdomen'
    """

    def clean(self, text: str, *, known: Iterable[str] = ()) -> CleanResult:
        """Return `text` with identifying spans removed.

        Parameters
        ----------
        text
            A description, comment or SR text value (already decoded).
        known
            Identifying values of the same dataset (name components, IDs,
            accession numbers...), removed wherever they appear.

        Returns
        -------
        CleanResult
            The cleaned text and the removed spans (kind, start, end) of the
            original; never the removed strings.
        """
        spans = self.find(text, known=known)
        if not spans:
            return CleanResult(text, [])
        parts = []
        pos = 0
        for span in spans:
            parts.append(text[pos : span.start])
            # A space keeps Latin words apart; Chinese has none to keep.
            left = text[span.start - 1] if span.start else ""
            right = text[span.end] if span.end < len(text) else ""
            parts.append("" if _is_cjk(left) or _is_cjk(right) else " ")
            pos = span.end
        parts.append(text[pos:])
        return CleanResult(_tidy("".join(parts).strip()), spans)

    def find(self, text: str, *, known: Iterable[str] = ()) -> list[Span]:
        """Return the identifying spans of `text`, merged and sorted.

        Where spans overlap, the earlier detector's kind is kept in this
        order: ``KNOWN``, ``EMAIL``, ``URL``, ``TWID``, ``MRN``, ``PHONE``,
        ``ADDR``, ``DATE``, ``NAME``, ``NUM``.
        """
        found: list[Span] = []
        values = frozenset(v for v in known if v)
        if values:
            pattern = _known_pattern(values)
            if pattern is not None:
                found += [Span("KNOWN", m.start(), m.end()) for m in pattern.finditer(text)]
        if not text.isascii() or _NUMBERS_CUE.search(text) is not None:
            self._numbers(text, found)
        self._names(text, found)
        return _merge(found)

    @staticmethod
    def _numbers(text: str, found: list[Span]) -> None:
        found += [Span("EMAIL", m.start(), m.end()) for m in _EMAIL.finditer(text)]
        found += [Span("URL", m.start(), m.end()) for m in _URL.finditer(text)]
        for m in _TWID.finditer(text):
            if _valid_id(m.group(1) + m.group(2)):
                found.append(Span("TWID", m.start(), m.end()))
        found += [Span("TWID", m.start(), m.end()) for m in _ID_LABEL.finditer(text)]
        found += [Span("MRN", m.start(), m.end()) for m in _MRN.finditer(text)]
        found += [Span("PHONE", m.start(), m.end()) for m in _PHONE.finditer(text)]
        found += [Span("ADDR", m.start(), m.end()) for m in _ADDR_ZH.finditer(text)]
        found += [Span("ADDR", m.start(), m.end()) for m in _ADDR_EN.finditer(text)]
        found += [Span("DATE", m.start(), m.end()) for m in _DATE.finditer(text)]
        found += [Span("NUM", m.start(), m.end()) for m in _LONG_NUM.finditer(text)]

    @staticmethod
    def _names(text: str, found: list[Span]) -> None:
        if "^" in text:
            found += [Span("NAME", m.start(), m.end()) for m in _PN_CARET.finditer(text)]
        if not text.isascii():
            for m in _NAME_ZH.finditer(text):
                span = _zh_name(text, m)
                if span is not None:
                    found.append(span)
        # The surname alternation is slow to try at every position: try it only
        # where a word is a surname or a hyphenated given name starts.
        end = 0
        for w in _LATIN_WORD.finditer(text):
            start = w.start()
            if start < end:
                continue
            if (
                w.group().lower() not in SURNAMES_LATIN
                and text[w.end() : w.end() + 1] not in _HYPHENS
            ):
                continue
            name = _NAME_EN.match(text, start)
            if name is not None:
                found.append(Span("NAME", start, name.end()))
                end = name.end()
        for m in _HONORIFIC_EN.finditer(text):
            end = m.end()
            after = _HONORIFIC_EN_AFTER.match(text, end)
            found.append(Span("NAME", m.start(), after.end() if after else end))


def _valid_id(candidate: str) -> bool:
    candidate = candidate.upper()
    if candidate[1].isdigit():
        return twid.is_valid(candidate)
    # Old Resident Certificate: the second letter's code counts by its last digit.
    first = twid.LETTER_CODES.get(candidate[0])
    second = twid.LETTER_CODES.get(candidate[1])
    if first is None or second is None:
        return False
    digits = f"{first:02d}{second % 10}{candidate[2:]}"
    return sum(w * int(d) for w, d in zip(twid.WEIGHTS, digits, strict=True)) % 10 == 0


def _is_cjk(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff"


def _zh_name(text: str, m: re.Match[str]) -> Span | None:
    """Accept a surname + given-name candidate only where a name can stand."""
    start, pos = m.start("sur"), m.end("sur")
    for n in (4, 3, 2):  # the stop-list: 高血壓, 陳舊性, 周圍...
        if text[start : start + n] in CLINICAL_ZH:
            return None
    suffix = _SUFFIX_ZH.match(text, pos)
    if suffix is not None:  # 王醫師, 陳先生
        return Span("NAME", start, suffix.end())
    end = pos
    while end < len(text) and end - pos < 2 and _is_cjk(text[end]):
        if text[end] in _NOT_GIVEN or _SUFFIX_ZH.match(text, end):
            break
        end += 1
    if end == pos:
        return None
    suffix = _SUFFIX_ZH.match(text, end)
    before = text[start - 1] if start > 0 else " "
    if m.group("intro") is None and suffix is None and _is_cjk(before):
        return None  # inside a run of Chinese text without a cue: a word, not a name
    return Span("NAME", start, suffix.end() if suffix else end)


def _merge(spans: list[Span]) -> list[Span]:
    if not spans:
        return []
    order = {"KNOWN": 0, "EMAIL": 1, "URL": 2, "TWID": 3, "MRN": 4, "PHONE": 5, "ADDR": 6,
             "DATE": 7, "NAME": 8, "NUM": 9}  # fmt: skip
    spans.sort(key=lambda s: (s.start, order[s.kind]))
    merged = [spans[0]]
    for span in spans[1:]:
        last = merged[-1]
        if span.start < last.end:
            if span.end > last.end:
                kind = last.kind if order[last.kind] <= order[span.kind] else span.kind
                merged[-1] = Span(kind, last.start, span.end)
        else:
            merged.append(span)
    return merged


__all__ = ["CLINICAL_ZH", "SURNAMES_LATIN", "SURNAMES_ZH", "CleanResult", "FreeTextCleaner", "Span"]
