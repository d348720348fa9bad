"""Scores of the IOP screening instruments, from the answers of a QuestionnaireResponse.

The points are the published scoring rules (DOMAIN.md section 1), held here as tables rather than read
from the Questionnaires' ordinalValue extensions: a unit test checks that the two agree, so editing a
form cannot silently change a score. An instrument with no answers at all was not administered and
scores None, never 0. Scorers expect answers that passed qr_validation; an answer outside the scored
options raises UnscoreableAnswer.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.intake.questionnaires import Answers, answers_by_link_id

__all__ = [
    "Answers", "AuditCScore", "CssrsScore", "IntakeScores", "Phq9Score", "ScreenScore", "UnscoreableAnswer",
    "administrative_sex", "answers_by_link_id", "audit_c_cut_off", "score_audit_c", "score_cssrs", "score_dast10",
    "score_gad7", "score_intake", "score_pc_ptsd5", "score_phq9",
]

YES, NO = "LA33-6", "LA32-8"
FREQUENCY = {"LA6568-5": 0, "LA6569-3": 1, "LA6570-1": 2, "LA6571-9": 3}  # LL358-3, PHQ-9 and GAD-7
AUDIT_C_POINTS: dict[str, dict[str, int]] = {
    "auditc-q1": {"LA6270-8": 0, "LA18926-8": 1, "LA18927-6": 2, "LA18928-4": 3, "LA18929-2": 4},
    "auditc-q2": {"LA15694-5": 0, "LA15695-2": 1, "LA18930-0": 2, "LA18931-8": 3, "LA18932-6": 4},
    "auditc-q3": {"LA6270-8": 0, "LA18933-4": 1, "LA18876-5": 2, "LA18891-4": 3, "LA18934-2": 4},
}
PHQ9_ITEMS = tuple(f"phq9-q{n}" for n in range(1, 10))
PHQ9_ITEM9 = "phq9-q9"
GAD7_ITEMS = tuple(f"gad7-q{n}" for n in range(1, 8))
DAST10_ITEMS = tuple(f"dast10-q{n}" for n in range(1, 11))
DAST10_REVERSED = "dast10-q3"  # "Are you always able to stop using drugs when you want to?": No scores 1
TRAUMA_EXPOSURE = "trauma-exposure"
PC_PTSD5_ITEMS = tuple(f"ptsd5-q{n}" for n in range(1, 6))
CSSRS_BASE_ITEMS = ("cssrs-q1", "cssrs-q2", "cssrs-q6")
CSSRS_IF_THOUGHTS = ("cssrs-q3", "cssrs-q4", "cssrs-q5")  # asked only when Q2 is Yes
CSSRS_RECENT = "cssrs-q6-recent"  # asked only when Q6 is Yes
ADMINISTRATIVE_SEX = "administrative-sex"

# Upper bound of each band, lowest first (DOMAIN.md 1.1, 1.2, 1.4).
PHQ9_BANDS = ((4, "minimal"), (9, "mild"), (14, "moderate"), (19, "moderately-severe"), (27, "severe"))
GAD7_BANDS = ((4, "minimal"), (9, "mild"), (14, "moderate"), (21, "severe"))
DAST10_BANDS = ((0, "none"), (2, "low"), (5, "moderate"), (8, "substantial"), (10, "severe"))


class UnscoreableAnswer(ValueError):
    """An answer that is not one of the instrument's scored options (the message names only the linkId)."""


@dataclass(frozen=True)
class ScreenScore:
    instrument: str
    total: int
    band: str
    item_points: Mapping[str, int]  # linkId -> points, answered items only
    missing: tuple[str, ...] = ()   # items that should have been answered but were not

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class Phq9Score(ScreenScore):
    @property
    def item9(self) -> int | None:
        """Thoughts of death or self-harm: any value above 0 starts the suicide-risk workflow."""
        return self.item_points.get(PHQ9_ITEM9)


@dataclass(frozen=True)
class AuditCScore(ScreenScore):
    cut_off: int = 4

    @property
    def positive(self) -> bool:
        return self.total >= self.cut_off

    @property
    def points_only_from_q1(self) -> bool:
        """All points from Q1: likely drinking below recommended limits (PMID 12695273)."""
        return self.total > 0 and self.item_points.get("auditc-q1") == self.total


@dataclass(frozen=True)
class CssrsScore:
    risk: str                     # none | low | moderate | high
    yes_items: tuple[str, ...]
    missing: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class IntakeScores:
    phq9: Phq9Score | None = None
    gad7: ScreenScore | None = None
    audit_c: AuditCScore | None = None
    dast10: ScreenScore | None = None
    pc_ptsd5: ScreenScore | None = None
    cssrs: CssrsScore | None = None

    def screens(self) -> list[ScreenScore]:
        """The administered instruments that have a total score."""
        return [s for s in (self.phq9, self.gad7, self.audit_c, self.dast10, self.pc_ptsd5) if s is not None]


def score_intake(answers: Answers, sex: str | None = None) -> IntakeScores:
    """Every instrument found in the answers; sex (administrative gender) defaults to the intake's own answer."""
    return IntakeScores(
        phq9=score_phq9(answers), gad7=score_gad7(answers),
        audit_c=score_audit_c(answers, sex or administrative_sex(answers)),
        dast10=score_dast10(answers), pc_ptsd5=score_pc_ptsd5(answers), cssrs=score_cssrs(answers),
    )


def score_phq9(answers: Answers) -> Phq9Score | None:
    points, missing = _points_of(answers, {item: FREQUENCY for item in PHQ9_ITEMS})
    if not points:
        return None
    total = sum(points.values())
    return Phq9Score("PHQ-9", total, _band(total, PHQ9_BANDS), points, missing)


def score_gad7(answers: Answers) -> ScreenScore | None:
    points, missing = _points_of(answers, {item: FREQUENCY for item in GAD7_ITEMS})
    if not points:
        return None
    total = sum(points.values())
    return ScreenScore("GAD-7", total, _band(total, GAD7_BANDS), points, missing)


def audit_c_cut_off(sex: str | None) -> int:
    """4 for men, 3 for women (DOMAIN.md 1.3); other or unknown sex gets 3 so that no one is under-screened."""
    return 4 if sex == "male" else 3


def score_audit_c(answers: Answers, sex: str | None = None) -> AuditCScore | None:
    points, missing = _points_of(answers, AUDIT_C_POINTS)
    if not points:
        return None
    if points.get("auditc-q1") == 0:
        missing = ()  # never drinks: Q2 and Q3 are skipped and score 0
    total, cut_off = sum(points.values()), audit_c_cut_off(sex)
    band = "positive" if total >= cut_off else "negative"
    return AuditCScore("AUDIT-C", total, band, points, missing, cut_off)


def score_dast10(answers: Answers) -> ScreenScore | None:
    yes_no = {item: _yes_no(answers, item) for item in DAST10_ITEMS}
    points = {item: int(not yes if item == DAST10_REVERSED else yes) for item, yes in yes_no.items() if yes is not None}
    if not points:
        return None
    total = sum(points.values())
    missing = tuple(item for item, yes in yes_no.items() if yes is None)
    return ScreenScore("DAST-10", total, _band(total, DAST10_BANDS), points, missing)


def score_pc_ptsd5(answers: Answers) -> ScreenScore | None:
    """Positive at 3 or more Yes. A patient who reports no trauma exposure skips the items and scores 0."""
    exposed = _first(answers, TRAUMA_EXPOSURE)
    points = {item: int(yes) for item in PC_PTSD5_ITEMS if (yes := _yes_no(answers, item)) is not None}
    if exposed is None and not points:
        return None
    missing = () if exposed is False else tuple(item for item in PC_PTSD5_ITEMS if item not in points)
    total = sum(points.values())
    return ScreenScore("PC-PTSD-5", total, "positive" if total >= 3 else "negative", points, missing)


def score_cssrs(answers: Answers) -> CssrsScore | None:
    """Columbia screener convention (DOMAIN.md 1.6); a Q6 behaviour of unknown timing counts as recent."""
    asked = (*CSSRS_BASE_ITEMS, *CSSRS_IF_THOUGHTS, CSSRS_RECENT)
    yes_no = {item: _yes_no(answers, item) for item in asked}
    if all(value is None for value in yes_no.values()):
        return None
    yes = {item for item, value in yes_no.items() if value}
    behaviour, behaviour_recent = "cssrs-q6" in yes, "cssrs-q6" in yes and yes_no[CSSRS_RECENT] is not False
    if yes & {"cssrs-q4", "cssrs-q5"} or behaviour_recent:
        risk = "high"
    elif "cssrs-q3" in yes or behaviour:
        risk = "moderate"
    else:
        risk = "low" if yes & {"cssrs-q1", "cssrs-q2"} else "none"
    expected = [*CSSRS_BASE_ITEMS, *(CSSRS_IF_THOUGHTS if "cssrs-q2" in yes else ()),
                *((CSSRS_RECENT,) if behaviour else ())]
    missing = tuple(item for item in expected if yes_no[item] is None)
    return CssrsScore(risk, tuple(item for item in asked if item in yes), missing)


def administrative_sex(answers: Answers) -> str | None:
    value = _first(answers, ADMINISTRATIVE_SEX)
    return value.get("code") if isinstance(value, Mapping) else None


def _first(answers: Answers, link_id: str) -> Any:
    values: Sequence[Any] = answers.get(link_id) or ()
    return values[0] if values else None


def _points_of(answers: Answers, tables: Mapping[str, Mapping[str, int]]) -> tuple[dict[str, int], tuple[str, ...]]:
    points: dict[str, int] = {}
    for item, table in tables.items():
        value = _first(answers, item)
        if value is None:
            continue
        code = value.get("code") if isinstance(value, Mapping) else None
        if code not in table:
            raise UnscoreableAnswer(f"Answer to '{item}' is not one of its scored options")
        points[item] = table[code]
    return points, tuple(item for item in tables if item not in points)


def _yes_no(answers: Answers, item: str) -> bool | None:
    """A Yes/No item answered as LOINC LA33-6/LA32-8 (or as a boolean, as some partners send)."""
    value = _first(answers, item)
    if value is None or isinstance(value, bool):
        return value
    code = value.get("code") if isinstance(value, Mapping) else None
    if code not in (YES, NO):
        raise UnscoreableAnswer(f"Answer to '{item}' is not Yes or No")
    return code == YES


def _band(total: int, bands: Sequence[tuple[int, str]]) -> str:
    return next(name for upper, name in bands if total <= upper)
