"""The intake's level-of-care decision table (DOMAIN.md 2.3; written out for clinicians in docs/triage.md).

Precedence: the safety rows first (they make the disposition urgent-safety-review, never IOP, whatever else
holds), then the higher-level rows, then "mild everywhere" (lower level), and IOP otherwise. When several
rows fire, every reason is listed and the most intensive ASAM level among them is recommended.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.intake.questionnaires import Answers
from services.intake.scoring import IntakeScores

# ASAM Criteria 3rd edition levels (DOMAIN.md 2.1), least intensive first.
LEVEL_NAMES = {
    "0.5": "Early intervention", "1": "Outpatient", "2.1": "Intensive outpatient",
    "2.5": "Partial hospitalization", "3.1": "Clinically managed low-intensity residential",
    "3.5": "Clinically managed high-intensity residential", "3.7": "Medically monitored intensive inpatient",
    "4": "Medically managed intensive inpatient",
}
DISPOSITION_NAMES = {
    "iop": "Admit to the Intensive Outpatient Program", "higher-level": "Refer to a higher level of care",
    "lower-level": "Refer to a lower level of care", "urgent-safety-review": "Same-day clinician safety review",
}
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Findings:
    """What the decision table reads, plus what the recommendation carries on to care planning."""

    phq9_total: int | None = None          # None: not administered
    phq9_item9: int | None = None
    gad7_total: int | None = None
    audit_c_positive: bool | None = None   # against the sex-specific cut-off
    dast10_total: int | None = None
    dast10_band: str | None = None
    trauma_positive: bool | None = None    # PC-PTSD-5
    cssrs_risk: str | None = None          # none | low | moderate | high
    withdrawal_seizures_or_dts: bool = False
    needs_24h_medical_monitoring: bool = False
    psychosis_or_mania: bool = False
    unable_to_take_part_safely: bool = False
    unsafe_environment: bool = False
    repeated_iop_without_progress: bool = False
    family_involvement: bool | None = None
    preferred_days: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    disposition: str             # iop | higher-level | lower-level | urgent-safety-review
    asam_level: str              # a key of LEVEL_NAMES
    reasons: tuple[str, ...]     # short, clinician-readable, no PHI
    safety_alert: bool = False


@dataclass(frozen=True)
class Rule:
    level: str
    reason: str
    applies: Callable[[Findings], bool]


# The level given with urgent-safety-review is provisional: the same-day review decides.
SAFETY_RULES = (
    Rule("4", "C-SSRS screener: high suicide risk", lambda f: f.cssrs_risk == "high"),
    Rule("2.5", "C-SSRS screener: moderate suicide risk", lambda f: f.cssrs_risk == "moderate"),
    Rule("2.5", "PHQ-9 item 9 above 0 (thoughts of death or self-harm)", lambda f: (f.phq9_item9 or 0) > 0),
)
HIGHER_LEVEL_RULES = (
    Rule("4", "Needs 24-hour medical or nursing monitoring", lambda f: f.needs_24h_medical_monitoring),
    Rule("3.7", "History of withdrawal seizures or delirium tremens: withdrawal management",
         lambda f: f.withdrawal_seizures_or_dts),
    Rule("3.5", "Recovery environment unsafe", lambda f: f.unsafe_environment),
    Rule("3.5", "Two or more earlier IOP episodes without lasting progress",
         lambda f: f.repeated_iop_without_progress),
    Rule("2.5", "Psychosis or mania", lambda f: f.psychosis_or_mania),
    Rule("2.5", "Unable to take part in outpatient treatment safely", lambda f: f.unable_to_take_part_safely),
)
MILD_EVERYWHERE = ("All screens mild (PHQ-9 under 10, GAD-7 under 10, AUDIT-C negative, DAST-10 2 or less, "
                   "PC-PTSD-5 negative, C-SSRS no risk) and no higher-level criteria")


def recommend_level_of_care(findings: Findings) -> Recommendation:
    safety = [rule for rule in SAFETY_RULES if rule.applies(findings)]
    higher = [rule for rule in HIGHER_LEVEL_RULES if rule.applies(findings)]
    if safety:
        level = _most_intensive([rule.level for rule in safety + higher])
        return Recommendation("urgent-safety-review", level, _reasons(safety + higher), safety_alert=True)
    if higher:
        return Recommendation("higher-level", _most_intensive([rule.level for rule in higher]), _reasons(higher))
    above_outpatient = _above_outpatient(findings)
    if not above_outpatient:
        return Recommendation("lower-level", "1", (MILD_EVERYWHERE,))
    return Recommendation("iop", "2.1", tuple(above_outpatient))


def findings_from_intake(answers: Answers, scores: IntakeScores) -> Findings:
    """Findings from a scored intake; a yes/no item counts only when answered Yes (safe-housing: when No)."""
    def said(link_id: str, value: bool) -> bool:
        return value in [a for a in answers.get(link_id, ()) if isinstance(a, bool)]

    days = {day.get("code") for day in answers.get("available-days", ()) if isinstance(day, dict)}
    family = [a for a in answers.get("family-involvement", ()) if isinstance(a, bool)]
    return Findings(
        phq9_total=scores.phq9.total if scores.phq9 else None,
        phq9_item9=scores.phq9.item9 if scores.phq9 else None,
        gad7_total=scores.gad7.total if scores.gad7 else None,
        audit_c_positive=scores.audit_c.positive if scores.audit_c else None,
        dast10_total=scores.dast10.total if scores.dast10 else None,
        dast10_band=scores.dast10.band if scores.dast10 else None,
        trauma_positive=scores.pc_ptsd5.band == "positive" if scores.pc_ptsd5 else None,
        cssrs_risk=scores.cssrs.risk if scores.cssrs else None,
        withdrawal_seizures_or_dts=said("withdrawal-seizures", True) or said("withdrawal-dts", True),
        needs_24h_medical_monitoring=said("needs-24h-medical-monitoring", True),
        psychosis_or_mania=said("psychosis-or-mania", True),
        unable_to_take_part_safely=said("unable-to-take-part-safely", True),
        unsafe_environment=said("safe-housing", False),
        repeated_iop_without_progress=said("repeated-iop-without-progress", True),
        family_involvement=family[0] if family else None,
        preferred_days=tuple(day for day in WEEK if day in days),
    )


def _above_outpatient(f: Findings) -> list[str]:
    """Why outpatient (level 1) is not enough; empty when every screen was given and is mild."""
    screens = (
        ("PHQ-9", f.phq9_total, lambda v: v < 10, "PHQ-9 total 10 or more"),
        ("GAD-7", f.gad7_total, lambda v: v < 10, "GAD-7 total 10 or more"),
        ("AUDIT-C", f.audit_c_positive, lambda v: not v, "AUDIT-C positive"),
        ("DAST-10", f.dast10_total, lambda v: v <= 2, "DAST-10 total 3 or more"),
        ("PC-PTSD-5", f.trauma_positive, lambda v: not v, "PC-PTSD-5 positive"),
        ("C-SSRS", f.cssrs_risk, lambda v: v == "none", "C-SSRS screener: low suicide risk"),
    )
    reasons = []
    for name, value, mild, above in screens:
        if value is None:
            reasons.append(f"{name} not administered")
        elif not mild(value):
            reasons.append(above)
    return reasons


def _most_intensive(levels: list[str]) -> str:
    order = list(LEVEL_NAMES)
    return max(levels, key=order.index)


def _reasons(rules: list[Rule]) -> tuple[str, ...]:
    return tuple(rule.reason for rule in rules)
