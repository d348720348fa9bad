"""Checks a QuestionnaireResponse against its Questionnaire, reporting every problem as an Issue.

Diagnostics name linkIds and item types, never an answer's value: answers are PHI. Issue codes are
FHIR issue types: "required" (a required answer is missing), "value" (a malformed or out-of-range
answer), "structure" (items or answers where the Questionnaire has none), "invalid" (the response
header). Required answers are checked only once the response is completed or amended; an in-progress
response is checked for structure. Answers from an answerValueSet are not expanded (no terminology
server here); answerOption lists are checked.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.intake.questionnaires import Answers, answer_value, answers_by_link_id, is_enabled
from shared.fhir.outcome import Issue

STATUSES = {"in-progress", "completed", "amended", "entered-in-error", "stopped"}
COMPLETE = {"completed", "amended"}
VALUE_KEYS = {
    "boolean": ("valueBoolean",), "decimal": ("valueDecimal",), "integer": ("valueInteger",),
    "date": ("valueDate",), "dateTime": ("valueDateTime",), "time": ("valueTime",), "string": ("valueString",),
    "text": ("valueString",), "url": ("valueUri",), "choice": ("valueCoding",),
    "open-choice": ("valueCoding", "valueString"), "attachment": ("valueAttachment",),
    "reference": ("valueReference",), "quantity": ("valueQuantity",),
}
_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
_DATE_TIME = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?)?)?")
_TIME = re.compile(r"\d{2}:\d{2}:\d{2}(\.\d+)?")
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"


@dataclass(frozen=True)
class _Walk:
    answers: Answers
    check_required: bool


def validate_response(qr: Mapping[str, Any], questionnaire: Mapping[str, Any]) -> list[Issue]:
    issues = _check_header(qr, questionnaire)
    walk = _Walk(answers_by_link_id(qr), check_required=qr.get("status") in COMPLETE)
    return issues + _check_items(questionnaire.get("item", []), qr.get("item", []), "QuestionnaireResponse", walk)


def _check_header(qr: Mapping[str, Any], questionnaire: Mapping[str, Any]) -> list[Issue]:
    issues = []
    if qr.get("resourceType") != "QuestionnaireResponse":
        issues.append(Issue("resourceType must be QuestionnaireResponse", "invalid",
                            expression="QuestionnaireResponse"))
    if qr.get("status") not in STATUSES:
        issues.append(Issue("status must be one of " + ", ".join(sorted(STATUSES)), "invalid",
                            expression="QuestionnaireResponse.status"))
    canonical = qr.get("questionnaire")
    if not canonical:
        issues.append(Issue("questionnaire (the canonical URL of the form) is missing", "required",
                            expression="QuestionnaireResponse.questionnaire"))
    elif not _refers_to(canonical, questionnaire):
        issues.append(Issue(f"questionnaire does not refer to {questionnaire['url']}|{questionnaire.get('version')}",
                            "invalid", expression="QuestionnaireResponse.questionnaire"))
    return issues


def _refers_to(canonical: str, questionnaire: Mapping[str, Any]) -> bool:
    url, _, version = canonical.partition("|")
    return url == questionnaire.get("url") and (not version or version == questionnaire.get("version"))


def _check_items(definitions: Sequence[Mapping[str, Any]], given: Sequence[Mapping[str, Any]], path: str,
                 walk: _Walk) -> list[Issue]:
    by_link_id = {definition["linkId"]: definition for definition in definitions}
    issues: list[Issue] = []
    seen: set[str] = set()
    for index, item in enumerate(given):
        item_path, link_id = f"{path}.item[{index}]", item.get("linkId")
        definition = by_link_id.get(link_id)
        if definition is None:
            issues.append(Issue(f"linkId '{link_id}' is not an item at this level of the Questionnaire", "structure",
                                expression=item_path))
            continue
        if link_id in seen and not (definition["type"] == "group" and definition.get("repeats")):
            issues.append(Issue(f"Item '{link_id}' appears more than once but does not repeat", "structure",
                                expression=item_path))
        seen.add(link_id)
        issues += _check_item(definition, item, item_path, walk)
    if walk.check_required:
        issues += [Issue(f"Required item '{d['linkId']}' is missing", "required", expression=path)
                   for d in definitions if d.get("required") and d["linkId"] not in seen and d["type"] != "display"
                   and is_enabled(d, walk.answers)]
    return issues


def _check_item(definition: Mapping[str, Any], item: Mapping[str, Any], path: str, walk: _Walk) -> list[Issue]:
    link_id, item_type = definition["linkId"], definition["type"]
    if not is_enabled(definition, walk.answers):
        if not (item.get("answer") or item.get("item")):
            return []
        return [Issue(f"Item '{link_id}' is answered but its enableWhen conditions hide it", "structure",
                      expression=path)]
    if item_type in ("group", "display"):
        if item.get("answer"):
            return [Issue(f"Item '{link_id}' is a {item_type} and cannot have answers", "structure",
                          expression=f"{path}.answer[0]")]
        return _check_items(definition.get("item", []), item.get("item", []), path, walk)
    return _check_question(definition, item, path, walk)


def _check_question(definition: Mapping[str, Any], item: Mapping[str, Any], path: str, walk: _Walk) -> list[Issue]:
    link_id, answers = definition["linkId"], item.get("answer", [])
    issues = []
    if item.get("item"):
        issues.append(Issue(f"Question '{link_id}' nests items under the item; they belong under its answers",
                            "structure", expression=f"{path}.item[0]"))
    if not answers and walk.check_required and definition.get("required"):
        issues.append(Issue(f"Required item '{link_id}' has no answer", "required", expression=path))
    if len(answers) > 1 and not definition.get("repeats"):
        issues.append(Issue(f"Item '{link_id}' does not repeat but has {len(answers)} answers", "structure",
                            expression=f"{path}.answer[1]"))
    for index, answer in enumerate(answers):
        answer_path = f"{path}.answer[{index}]"
        issues += _check_answer(definition, answer, answer_path)
        issues += _check_items(definition.get("item", []), answer.get("item", []), answer_path, walk)
    return issues


def _check_answer(definition: Mapping[str, Any], answer: Mapping[str, Any], path: str) -> list[Issue]:
    link_id, item_type = definition["linkId"], definition["type"]
    keys = [key for key in answer if key.startswith("value")]
    allowed = _allowed_value_keys(definition)
    if not keys:
        return [] if answer.get("item") else [Issue(f"Answer to '{link_id}' has no value", "value", expression=path)]
    if len(keys) > 1 or keys[0] not in allowed:
        return [Issue(f"Answer to '{link_id}' must be {' or '.join(allowed)} (item type {item_type})", "value",
                      expression=path)]
    value = answer[keys[0]]
    if not _well_formed(keys[0], value):
        return [Issue(f"Answer to '{link_id}' is not a valid {keys[0]}", "value", expression=path)]
    if definition.get("answerOption") and not _in_options(value, definition["answerOption"], item_type):
        return [Issue(f"Answer to '{link_id}' is not one of its answerOption values", "value", expression=path)]
    low, high = _bound(definition, MIN_VALUE), _bound(definition, MAX_VALUE)
    number = value.get("value") if keys[0] == "valueQuantity" else value
    if isinstance(number, int | float) and ((low is not None and number < low) or (high is not None and number > high)):
        return [Issue(f"Answer to '{link_id}' is outside the allowed range {low}..{high}", "value", expression=path)]
    return []


def _allowed_value_keys(definition: Mapping[str, Any]) -> tuple[str, ...]:
    item_type, options = definition["type"], definition.get("answerOption", [])
    if item_type in ("choice", "open-choice") and options:
        # R4 answerOption may hold integer, date, time, string, Coding or Reference values.
        keys = tuple(dict.fromkeys(key for option in options for key in option if key.startswith("value")))
        return keys + ("valueString",) if item_type == "open-choice" and "valueString" not in keys else keys
    return VALUE_KEYS.get(item_type, ())


def _well_formed(key: str, value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    checks = {
        "valueBoolean": lambda: isinstance(value, bool),
        "valueInteger": lambda: isinstance(value, int) and not isinstance(value, bool),
        "valueDecimal": lambda: number,
        "valueDate": lambda: isinstance(value, str) and _DATE.fullmatch(value) is not None and _real_date(value),
        "valueDateTime": lambda: isinstance(value, str) and _DATE_TIME.fullmatch(value) is not None
        and _real_date(value[:10]),
        "valueTime": lambda: isinstance(value, str) and _TIME.fullmatch(value) is not None,
        "valueString": lambda: isinstance(value, str) and value.strip() != "",
        "valueUri": lambda: isinstance(value, str) and value.strip() != "",
        "valueCoding": lambda: isinstance(value, Mapping) and bool(value.get("code")),
        "valueQuantity": lambda: isinstance(value, Mapping) and isinstance(value.get("value"), int | float)
        and not isinstance(value.get("value"), bool),
        "valueReference": lambda: isinstance(value, Mapping) and bool(value.keys() & {"reference", "identifier"}),
        "valueAttachment": lambda: isinstance(value, Mapping),
    }
    return checks.get(key, lambda: False)()


def _real_date(text: str) -> bool:
    if len(text) < 10:
        return len(text) == 4 or 1 <= int(text[5:7]) <= 12
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _in_options(value: Any, options: Sequence[Mapping[str, Any]], item_type: str) -> bool:
    if item_type == "open-choice" and isinstance(value, str):
        return True  # free text is what open-choice allows beside its options
    for option in options:
        offered = answer_value(option)
        if isinstance(value, Mapping) and isinstance(offered, Mapping) and "code" in offered:
            if value.get("code") == offered["code"] and value.get("system") == offered.get("system"):
                return True
        elif value == offered and type(value) is type(offered):
            return True
    return False


def _bound(definition: Mapping[str, Any], url: str) -> float | None:
    extension = next((e for e in definition.get("extension", []) if e.get("url") == url), None)
    return None if extension is None else answer_value(extension)
