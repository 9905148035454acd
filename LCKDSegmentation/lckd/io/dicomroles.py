"""What one DICOM series is, from its headers: an input (T1, T1ce, T2, FLAIR) or something set aside.

`judge(series)` returns a `Role`: the modality (or None) and the reason in words. The rules, in
the order they decide:

1. set aside what cannot be an input: not MR, a screen save (secondary capture), a localizer
   (scout, survey, three-plane), a derived or secondary image (reformat, map), diffusion (DWI,
   ADC, b value), perfusion or another dynamic series, susceptibility / angiography / proton
   density, too few slices, a stack with a missing slice;
2. the family (T1, T2, FLAIR) from an enhanced file's AcquisitionContrast, else from the series
   description, protocol and sequence names in the vendors' conventions (Siemens t2_tirm
   dark-fluid, MPRAGE, KM; GE BRAVO, FRFSE, +C; Philips T1W_3D_TFE, VIEW_FLAIR; Canon T1WI, Gd-),
   else from the physics: an inversion time of 1500 ms or more is FLAIR, a short TE with a
   short TR (or an inversion time of 600-1500 ms, as MPRAGE and T1-FLAIR have) is T1, a long
   TE with a long TR is T2;
3. contrast for a T1: ContrastBolusAgent (or the enhanced contrast attributes) or words such as
   post / gad / +C / KM make it T1ce; pre / native / without keep it T1. Acquisition order
   (a T1 after the agent was given in the study) is decided for the study as a whole
   (`lckd.io.dicomstudy`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..base.modalities import guess_modality
from .dicomseries import SeriesInfo

#: Fewest slices a series needs to be a 3D input (localizers have 1-5 per plane).
MIN_SLICES = 8
#: An inversion time at or above this (ms) nulls fluid: FLAIR (T1-FLAIR and MPRAGE use 600-1500 ms, STIR ~150).
FLAIR_TI_MS = 1500.0

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_WORDS = {
    "localizer": r"locali[sz]er|\bscout|survey|3[\W_]*pl(ane)?|\bloc\b|locator|tri[\W_]*pilot|aahead|\bpilot\b",
    "diffusion": r"\bdwi|diff|\badc\b|\bdti\b|trace|tensor|\bb[\W_]*1000|\bfa\b|\bep2d_diff",
    "perfusion": r"perf|\bdsc\b|\bdce\b|\basl\b|pasl|pcasl|rcbv|rcbf|\bcbf\b|\bcbv\b|\bmtt\b|\bttp\b|bolus",
    "susceptibility": r"\bswi|\bswan|susc|t2[\W_]*\*|t2[\W_]*star|hemo|\bsws\b",
    "angiography": r"\bmra\b|\btof\b|angio|venogra|\bpc[\W_]*mra",
    "proton density": r"\bpd\b|\bpdw|proton[\W_]*dens",
    "spectroscopy": r"\bmrs\b|spectro|\bcsi\b|\bsvs\b",
}
#: Vendor words the generic name guess (`lckd.base.modalities.guess_modality`) does not know.
_VENDOR_NAMES = [
    (r"\bt1wi\b", "t1w"), (r"\bt2wi\b", "t2w"),                       # Canon / Toshiba
    (r"\bgd[\W_]*(?=t1)", "post "), (r"(?<=\W)km\b", " post"),       # Canon 'Gd-T1WI'; Siemens 'KM' (Kontrastmittel)
    (r"\bmdc\b", "post"), (r"\bce[\W_]*(?=t1)", "post "),            # Italian 'MDC'; 'CE-T1'
    (r"\bbravo\b", "t1 bravo"), (r"\bt1tfe\b", "t1 tfe"), (r"\bfspgr\b", "t1 spgr"),
    (r"\bvibe\b", "t1 vibe"), (r"\bspace\b(?=.*dark|.*flair)", "flair"),
    (r"\bfrfse\b|\bfse[\W_]*xl\b", "t2 fse"), (r"\bview[\W_]*flair\b", "flair"),
]
_CONTRAST_WORDS = r"\+\s*c\b|\bc\s*\+|\bpost|\bgad|gado|\bgd\b|contrast|\bce\b|\bkm\b|\bmdc\b|\benh"
_NO_CONTRAST_WORDS = r"\bpre\b|\bnative\b|\bnon[\W_]*contrast|\bwithout\b|\bw/o\b|\bnative\b"
_NO_AGENT = {"", "none", "no", "n/a", "na", "0"}


@dataclass(frozen=True)
class Role:
    """What a series is: `modality` (T1, T1ce, T2, FLAIR) or None when set aside, and why."""

    modality: str | None
    reason: str
    contrast: bool | None = None       # True: post-contrast evidence; False: pre-contrast words; None: nothing
    family: str | None = None          # T1, T2 or FLAIR (T1 and T1ce are both family T1)


def names_text(series: SeriesInfo) -> str:
    """The series' names joined (description, protocol, sequence), lower case."""
    a = series.attributes
    parts = [series.description, a.get("ProtocolName", ""), a.get("SequenceName", ""), a.get("PulseSequenceName", "")]
    return " | ".join(str(p) for p in parts if p).lower()


def set_aside(series: SeriesInfo) -> str | None:
    """Why `series` cannot be an input, or None when it can."""
    a = series.attributes
    kind = str(a.get("Modality", "")).upper()
    image_type = [str(v).upper() for v in _tuple(a.get("ImageType"))]
    names = names_text(series)
    if str(a.get("SOPClassUID", "")).startswith(_SECONDARY_CAPTURE) or a.get("ConversionType"):
        return "a screen save (secondary capture), not a scan"
    if kind and kind != "MR":
        return f"modality {kind}, not MR"
    if "LOCALIZER" in image_type or re.search(_WORDS["localizer"], names):
        return "a localizer (scout), not a diagnostic scan"
    for word in ("DIFFUSION", "ADC", "TRACEW", "FA", "EADC"):
        if word in image_type:
            return "diffusion (DWI / ADC), not an input of this model"
    if _number(a.get("DiffusionBValue")) or re.search(_WORDS["diffusion"], names):
        return "diffusion (DWI / ADC), not an input of this model"
    if "DERIVED" in image_type or "SECONDARY" in image_type:
        return f"derived or secondary ({'/'.join(image_type[:3])}: a reformat or a computed map), not an acquisition"
    if "PERFUSION" in image_type or re.search(_WORDS["perfusion"], names) \
            or (_number(a.get("NumberOfTemporalPositions")) or 1) > 1:
        return "perfusion or another dynamic series, not an input of this model"
    if str(a.get("AcquisitionContrast", "")).upper() in ("DIFFUSION", "PERFUSION", "PROTON_DENSITY", "ANGIO"):
        return f"acquisition contrast {a['AcquisitionContrast']}, not an input of this model"
    for what in ("susceptibility", "angiography", "proton density", "spectroscopy"):
        if re.search(_WORDS[what], names):
            return f"{what}, not an input of this model"
    if series.slices < MIN_SLICES:
        return f"only {series.slices} slice(s): not a 3D volume"
    if series.problem:
        return series.problem
    return None


def judge(series: SeriesInfo) -> Role:
    """The role of one series on its own headers (acquisition order is the study's to apply)."""
    aside = set_aside(series)
    if aside:
        return Role(None, aside)
    family, why = _family(series)
    if family is None:
        return Role(None, why)
    if family != "T1":
        return Role(family, why, family=family)
    contrast, evidence = contrast_evidence(series)
    if contrast:
        return Role("T1ce", f"{why}; {evidence}", contrast=True, family="T1")
    return Role("T1", why + (f"; {evidence}" if evidence else ""), contrast=contrast, family="T1")


def _family(series: SeriesInfo) -> tuple[str | None, str]:
    a = series.attributes
    physics, physics_why = _physics_family(a)
    acquired = str(a.get("AcquisitionContrast", "")).upper()
    if acquired in ("T1", "T2", "FLAIR"):
        return acquired, f"acquisition contrast {acquired} (enhanced header)"
    named = name_family(series)
    if named:
        text, family = named
        agree = f", {physics_why}" if physics == family else ""
        return family, f"name '{text}'{agree}"
    if physics:
        return physics, physics_why
    return None, ("not recognised as T1, T1ce, T2 or FLAIR (no known name, " + (physics_why or "no TR/TE") + ")")


def name_family(series: SeriesInfo) -> tuple[str, str] | None:
    """(the name that told, family T1 / T2 / FLAIR) from the series names in the vendors' conventions."""
    a = series.attributes
    for text in (series.description, a.get("ProtocolName", ""), a.get("SequenceName", "")):
        if not text:
            continue
        guess = guess_modality(vendor_words(str(text)))
        if guess:
            return str(text), ("T1" if guess == "T1ce" else guess)
    return None


def vendor_words(text: str) -> str:
    """A series name with vendor-specific words rewritten into the generic ones the name guess knows."""
    out = " " + str(text).lower().replace("_", " ") + " "
    for pattern, replacement in _VENDOR_NAMES:
        out = re.sub(pattern, replacement, out)
    return out


def _physics_family(a: dict) -> tuple[str | None, str]:
    tr, te = _number(a.get("RepetitionTime")), _number(a.get("EchoTime") or a.get("EffectiveEchoTime"))
    ti = _number(a.get("InversionTime")) or max((_number(v) or 0.0 for v in _tuple(a.get("InversionTimes"))),
                                                default=0.0) or None
    text = ", ".join(f"{k} {v:g} ms" for k, v in (("TR", tr), ("TE", te), ("TI", ti)) if v is not None)
    if ti is not None and ti >= FLAIR_TI_MS:
        return "FLAIR", f"inversion time {ti:g} ms (fluid-attenuated)"
    if te is None or tr is None:
        return None, text
    if te < 30 and (tr < 1000 or (ti is not None and 600 <= ti < FLAIR_TI_MS)):
        return "T1", f"T1-weighted physics ({text})"
    if te >= 70 and tr >= 2000:
        return "T2", f"T2-weighted physics ({text})"
    return None, text


def contrast_evidence(series: SeriesInfo) -> tuple[bool | None, str]:
    """(True, why) for a post-contrast header or name, (False, why) for a pre-contrast name, (None, '')."""
    a = series.attributes
    agent = str(a.get("ContrastBolusAgent") or a.get("ContrastBolusIngredient") or "").strip()
    if agent.lower() not in _NO_AGENT:
        return True, "contrast agent in the header (ContrastBolusAgent)"
    if str(a.get("ContrastBolusAgentAdministered", "")).upper() == "YES":
        return True, "contrast agent administered (enhanced header)"
    for text in (series.description, a.get("ProtocolName", "")):
        words = vendor_words(str(text or ""))
        if re.search(_NO_CONTRAST_WORDS, words):
            return False, f"pre-contrast name '{text}'"
        if re.search(_CONTRAST_WORDS, words):
            return True, f"post-contrast name '{text}'"
    return None, ""


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _tuple(value) -> tuple:
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (value,)
