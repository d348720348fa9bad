"""The topics and event types of the contract (ARCHITECTURE.md, "Events"), as code."""
from __future__ import annotations

from dataclasses import dataclass

PARTITIONS = 6
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class EventType:
    type: str
    topic: str
    source: str
    focus: str  # the FHIR resource type of the Bundle's first entry
    summary: str
    context: tuple[str, ...] = ()  # what else the Bundle carries


INTAKE, CAREPLAN, ENCOUNTER, AFTERCARE = "iop.intake.events", "iop.careplan.events", "iop.encounter.events", \
    "iop.aftercare.events"

EVENT_TYPES: tuple[EventType, ...] = (
    EventType("iop.intake.received", INTAKE, "/iop/intake", "QuestionnaireResponse",
              "A referral partner's intake was accepted and stored.", ("Patient", "ServiceRequest")),
    EventType("iop.intake.assessed", INTAKE, "/iop/intake", "QuestionnaireResponse",
              "An intake was scored and triaged; carries the level-of-care recommendation.",
              ("Patient", "Observation", "Flag")),
    EventType("iop.intake.safety-alert", INTAKE, "/iop/intake", "Flag",
              "An intake showed suicide risk: a clinician must review it the same day.",
              ("QuestionnaireResponse", "Observation")),
    EventType("iop.assessment.completed", INTAKE, "/iop/intake", "QuestionnaireResponse",
              "A re-assessment (PHQ-9, GAD-7, substance-use check-in) was scored.", ("Observation",)),
    EventType("iop.careplan.created", CAREPLAN, "/iop/careplan", "CarePlan",
              "A personalised IOP plan was drafted from an intake.", ("Goal", "EpisodeOfCare")),
    EventType("iop.careplan.revised", CAREPLAN, "/iop/careplan", "CarePlan",
              "A clinician revised a plan, or progress changed it.", ("Goal",)),
    EventType("iop.careplan.graduated", CAREPLAN, "/iop/careplan", "CarePlan",
              "The patient graduated: plan and episode completed, goal outcomes recorded.",
              ("Goal", "EpisodeOfCare")),
    EventType("iop.goal.updated", CAREPLAN, "/iop/careplan", "Goal",
              "A goal's achievement status changed after a re-assessment.", ()),
    EventType("iop.encounter.planned", ENCOUNTER, "/iop/encounters", "Encounter",
              "A session was scheduled from the plan.", ()),
    EventType("iop.encounter.finished", ENCOUNTER, "/iop/encounters", "Encounter",
              "A session took place.", ()),
    EventType("iop.encounter.cancelled", ENCOUNTER, "/iop/encounters", "Encounter",
              "A session was cancelled, with its reason (no-show among them).", ()),
    EventType("iop.aftercare.planned", AFTERCARE, "/iop/aftercare", "CarePlan",
              "A step-down plan, referrals and check-ins were set up after graduation.",
              ("ServiceRequest", "Goal")),
    EventType("iop.aftercare.checkin-missed", AFTERCARE, "/iop/aftercare", "CarePlan",
              "An aftercare check-in was not done within its window.", ()),
    EventType("iop.ehr.delivered", AFTERCARE, "/iop/aftercare", "Subscription",
              "A notification reached an external EHR.", ()),
    EventType("iop.ehr.failed", AFTERCARE, "/iop/aftercare", "Subscription",
              "A notification could not be delivered to an external EHR after its retries.", ()),
)

BY_TYPE = {e.type: e for e in EVENT_TYPES}
TOPICS: tuple[str, ...] = tuple(dict.fromkeys(e.topic for e in EVENT_TYPES))
ALL_TOPICS: tuple[str, ...] = TOPICS + tuple(t + DLQ_SUFFIX for t in TOPICS)


def event_type(name: str) -> EventType:
    try:
        return BY_TYPE[name]
    except KeyError:
        raise ValueError(f"unknown event type {name!r}") from None
