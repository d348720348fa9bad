"""Search parameters of the R4 resource types the suite serves (names as in the FHIR spec)."""
from __future__ import annotations

from shared.fhir.search import SearchParam as P


def subject_params(path: str = "subject") -> list[P]:
    return [P("patient", "reference", path, "the patient (Patient/id or id)"),
            P("subject", "reference", path, "the subject")]


PATIENT = [P("identifier", "token", "identifier"), P("name", "string", "name"), P("family", "string", "name.family"),
           P("given", "string", "name.given"), P("birthdate", "date", "birthDate"), P("gender", "token", "gender")]
QUESTIONNAIRE = [P("url", "token", "url"), P("version", "token", "version"), P("status", "token", "status"),
                 P("name", "string", "name"), P("title", "string", "title"), P("code", "token", "code")]
QUESTIONNAIRE_RESPONSE = [*subject_params(), P("status", "token", "status"),
                          P("questionnaire", "token", "questionnaire"), P("authored", "date", "authored"),
                          P("based-on", "reference", "basedOn"), P("identifier", "token", "identifier")]
OBSERVATION = [*subject_params(), P("status", "token", "status"), P("code", "token", "code"),
               P("category", "token", "category"),
               P("date", "date", "effectiveDateTime|effectivePeriod|effectiveInstant"),
               P("derived-from", "reference", "derivedFrom"), P("has-member", "reference", "hasMember")]
SERVICE_REQUEST = [*subject_params(), P("status", "token", "status"), P("intent", "token", "intent"),
                   P("code", "token", "code"), P("category", "token", "category"),
                   P("authored", "date", "authoredOn"), P("requester", "reference", "requester"),
                   P("identifier", "token", "identifier"), P("based-on", "reference", "basedOn")]
FLAG = [*subject_params(), P("status", "token", "status"), P("category", "token", "category"),
        P("date", "date", "period")]
EPISODE_OF_CARE = [P("patient", "reference", "patient"), P("status", "token", "status"),
                   P("type", "token", "type"), P("date", "date", "period"), P("identifier", "token", "identifier")]
CAREPLAN = [*subject_params(), P("status", "token", "status"), P("intent", "token", "intent"),
            P("category", "token", "category"), P("date", "date", "period"), P("goal", "reference", "goal"),
            P("based-on", "reference", "basedOn"), P("replaces", "reference", "replaces"),
            P("activity-code", "token", "activity.detail.code"), P("identifier", "token", "identifier"),
            P("instantiates-canonical", "token", "instantiatesCanonical")]
GOAL = [*subject_params(), P("lifecycle-status", "token", "lifecycleStatus"),
        P("achievement-status", "token", "achievementStatus"), P("category", "token", "category"),
        P("start-date", "date", "startDate"), P("target-date", "date", "target.dueDate"),
        P("identifier", "token", "identifier")]
ENCOUNTER = [*subject_params(), P("status", "token", "status"), P("class", "token", "class"),
             P("type", "token", "type"), P("date", "date", "period"),
             P("episode-of-care", "reference", "episodeOfCare"), P("based-on", "reference", "basedOn"),
             P("participant", "reference", "participant.individual"),
             P("practitioner", "reference", "participant.individual"),
             P("service-type", "token", "serviceType"), P("identifier", "token", "identifier"),
             P("reason-code", "token", "reasonCode")]
CONSENT = [P("patient", "reference", "patient"), P("status", "token", "status"), P("category", "token", "category"),
           P("period", "date", "provision.period"), P("actor", "reference", "provision.actor.reference"),
           P("purpose", "token", "provision.purpose"), P("date", "date", "dateTime")]
GROUP = [P("identifier", "token", "identifier"), P("type", "token", "type"), P("actual", "token", "actual"),
         P("code", "token", "code"), P("member", "reference", "member.entity"), P("name", "string", "name")]
SUBSCRIPTION = [P("status", "token", "status"), P("url", "token", "channel.endpoint"),
                P("criteria", "token", "criteria"), P("type", "token", "channel.type")]
AUDIT_EVENT = [P("patient", "reference", "entity.what"), P("entity", "reference", "entity.what"),
               P("agent", "reference", "agent.who"), P("date", "date", "recorded"), P("type", "token", "type"),
               P("subtype", "token", "subtype"), P("outcome", "token", "outcome"), P("action", "token", "action")]
PROVENANCE = [P("target", "reference", "target"), P("patient", "reference", "target"),
              P("recorded", "date", "recorded"), P("entity", "reference", "entity.what")]
TASK = [P("patient", "reference", "for"), P("subject", "reference", "for"), P("status", "token", "status"),
        P("intent", "token", "intent"), P("focus", "reference", "focus"), P("code", "token", "code"),
        P("authored-on", "date", "authoredOn"), P("business-status", "token", "businessStatus")]
