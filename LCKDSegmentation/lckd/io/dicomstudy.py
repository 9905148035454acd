"""A DICOM study folder as inputs: which series is T1, T1ce, T2 and FLAIR, and why.

`recognise(folder, choices)` finds the series (`lckd.io.dicomseries`), judges each on its
headers (`lckd.io.dicomroles`), applies the study-wide rule of acquisition order (a T1 with no
contrast words or agent is post-contrast when acquired after the agent was given in the
study, or when it repeats an earlier T1's sequence), and picks one series per modality: the
explicit choice (`--t1ce 7`, a series number or SeriesInstanceUID; `none` leaves the modality
out) always wins, otherwise the 3D series with the finest voxels. Every series is listed with
its assignment and reason (`Study.lines`); where two compete, one line names them and the flag
that chooses. Series are named by number and description only: nothing identifying is printed
or recorded.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import InputError
from ..base.modalities import MODALITIES, canonical
from .dicomroles import Role, judge
from .dicomseries import SeriesInfo, find_series

#: Flag of each modality, as `lckd segment` spells it (named in the competition lines).
FLAGS = {"T1": "--t1", "T1ce": "--t1ce", "T2": "--t2", "FLAIR": "--flair"}
#: A choice that leaves a modality out.
NONE_CHOICE = "none"


@dataclass
class Study:
    """The series of a study folder, their roles and the series chosen per modality."""

    series: list                                   # SeriesInfo, in series-number order
    roles: dict                                    # series label -> Role
    chosen: dict = field(default_factory=dict)     # modality -> SeriesInfo
    competing: list = field(default_factory=list)  # one line per modality with more than one candidate

    def lines(self) -> list[str]:
        """The listing: each series with its assignment and reason, then the competition lines."""
        used = {s.label: m for m, s in self.chosen.items()}
        rows = []
        for s in self.series:
            role: Role = self.roles[s.label]
            if s.label in used:
                what = used[s.label]
            elif role.modality:
                what = f"({role.modality}, not used)"
            else:
                what = "set aside"
            rows.append(f"  {s.name()[:48]:<50}{what:<18}{role.reason}")
        return rows + self.competing

    def record(self) -> dict:
        """The study part of a result record: series numbers, descriptions, assignments, reasons."""
        used = {s.label: m for m, s in self.chosen.items()}
        return {"series": [{"series": s.label, "description": s.description, "slices": s.slices,
                            "assigned": used.get(s.label), "recognised": self.roles[s.label].modality,
                            "reason": self.roles[s.label].reason} for s in self.series],
                "chosen": {m: s.label for m, s in self.chosen.items()},
                "competing": list(self.competing)}

    def source_name(self, modality: str) -> str:
        """How a chosen series is named as an input: '<DICOM series 5 'AX T1 +C'>'."""
        return f"<DICOM {self.chosen[modality].name()}>"

    def files(self) -> list:
        """Every file of the study's series (outputs may never replace one)."""
        return [f for s in self.series for f in s.files]


def recognise(folder: str | Path, choices: Mapping[str, str | None] | None = None) -> Study:
    """Recognise the inputs of a study folder; `choices` maps modality -> series number / UID / 'none'."""
    return recognise_series(find_series(folder), choices)


def recognise_series(series: list[SeriesInfo], choices: Mapping[str, str | None] | None = None) -> Study:
    """Recognise the inputs among `series` (`lckd.io.dicomseries.series_from_files`: a study folder's, or
    those of the volumes Slicer loaded from DICOM); `InputError` when none is T1, T1ce, T2 or FLAIR."""
    roles = {s.label: judge(s) for s in series}
    _acquisition_order(series, roles)
    explicit = {canonical(m): str(v).strip() for m, v in (choices or {}).items() if v is not None}
    study = Study(series, roles)
    taken: dict[str, str] = {}
    for mod, choice in explicit.items():
        if choice.lower() == NONE_CHOICE:
            continue
        s = _select(series, choice, mod)
        if s.label in taken:
            raise InputError(f"{FLAGS[mod]} {choice}: {s.name()} is already given as {taken[s.label]}")
        taken[s.label] = mod
        study.chosen[mod] = s
    for mod in MODALITIES:
        if mod in explicit:
            continue
        candidates = [s for s in series if roles[s.label].modality == mod and s.label not in taken]
        if not candidates:
            continue
        candidates.sort(key=_preference)
        study.chosen[mod] = candidates[0]
        if len(candidates) > 1:
            first, others = candidates[0], candidates[1:]
            study.competing.append(
                f"{mod}: {len(candidates)} candidates, {first.name()} used ({_why_first(first)}), "
                + ", ".join(o.name() for o in others) + f" not; choose with {FLAGS[mod]} SERIES, e.g. "
                f"{FLAGS[mod]} {others[0].label}")
    if not study.chosen:
        raise InputError(f"no T1, T1ce, T2 or FLAIR series recognised among the {len(series)} series of the study; "
                         "choose them with --t1/--t1ce/--t2/--flair SERIES (lckd study DIR lists them)")
    return study


def _select(series: list, choice: str, mod: str) -> SeriesInfo:
    """The series a flag names by label, number or SeriesInstanceUID."""
    by_label = [s for s in series if s.label == choice]
    by_number = [s for s in series if s.number is not None and str(s.number) == choice]
    by_uid = [s for s in series if s.uid == choice]
    for found in (by_label, by_uid, by_number):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            labels = ", ".join(s.label for s in found)
            raise InputError(f"{FLAGS[mod]} {choice}: {len(found)} series match ({labels}); give one of these")
    labels = ", ".join(s.label for s in series)
    raise InputError(f"{FLAGS[mod]} {choice}: the study has no such series (its series: {labels})")


def _preference(s: SeriesInfo) -> tuple:
    """Sort key: 3D acquisitions first, then finer voxels, more slices, later acquisition."""
    three_d = str(s.attributes.get("MRAcquisitionType", "")).upper() == "3D"
    return (not three_d, round(s.voxel_volume, 3), -s.slices, -(s.time or 0.0), s.label)


def _why_first(s: SeriesInfo) -> str:
    three_d = str(s.attributes.get("MRAcquisitionType", "")).upper() == "3D"
    return ("3D, " if three_d else "") + f"{s.voxel_volume:.3g} mm3 voxels"


def _acquisition_order(series: list, roles: dict) -> None:
    """A T1 with no contrast evidence of its own becomes T1ce when acquired after the agent was given
    (a series with contrast evidence, or a perfusion series, earlier in the study), or when an
    earlier T1 repeats its sequence."""
    given = [s.time for s in series if s.time is not None and (
        roles[s.label].contrast or "perfusion" in roles[s.label].reason)]
    agent_time = min(given) if given else None
    t1s = [s for s in series if roles[s.label].modality == "T1" and roles[s.label].contrast is None]
    for s in t1s:
        role = roles[s.label]
        if agent_time is not None and s.time is not None and s.time > agent_time:
            roles[s.label] = Role("T1ce", f"{role.reason}; acquired after the contrast agent was given",
                                  contrast=True, family="T1")
            continue
        earlier = [o for o in t1s if o is not s and o.time is not None and s.time is not None and o.time < s.time
                   and _same_sequence(o, s)]
        if earlier:
            roles[s.label] = Role("T1ce", f"{role.reason}; repeats {earlier[0].name()}'s sequence later "
                                          "(acquisition order: taken as post-contrast)", contrast=True, family="T1")


def _same_sequence(a: SeriesInfo, b: SeriesInfo) -> bool:
    keys = ("SequenceName", "ScanningSequence", "MRAcquisitionType", "RepetitionTime", "EchoTime", "InversionTime")
    return all(a.attributes.get(k) == b.attributes.get(k) for k in keys)


def read_study(study: Study) -> dict:
    """The chosen series as SimpleITK images (modality -> image), read through `imageio`'s DICOM reader."""
    from .imageio import read_dicom_files

    return {m: read_dicom_files(s.files, f"{m} {s.name()}") for m, s in study.chosen.items()}
