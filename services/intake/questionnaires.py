"""The Questionnaires intake serves, and the item rules that scoring and validation share.

The catalogue is the package's own JSON files (services/intake/data). Answers are read from a
QuestionnaireResponse into one flat mapping, linkId -> answer values, because every linkId is unique
within a Questionnaire and enableWhen refers to questions by linkId wherever they sit.
"""
from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
QUESTIONNAIRE_BASE = "https://iop-suite.org/fhir/Questionnaire"
IOP_INTAKE_URL = f"{QUESTIONNAIRE_BASE}/iop-intake"
PHQ9_URL = f"{QUESTIONNAIRE_BASE}/phq-9"
GAD7_URL = f"{QUESTIONNAIRE_BASE}/gad-7"
SUBSTANCE_USE_CHECKIN_URL = f"{QUESTIONNAIRE_BASE}/substance-use-checkin"

Answers = Mapping[str, Sequence[Any]]


def load_catalogue(data_dir: Path = DATA_DIR) -> dict[str, dict[str, Any]]:
    """Every Questionnaire in data_dir, keyed by canonical url (one version of each is served)."""
    catalogue: dict[str, dict[str, Any]] = {}
    for path in sorted(data_dir.glob("*.json")):
        questionnaire = json.loads(path.read_text(encoding="utf-8"))
        url = questionnaire["url"]
        if url in catalogue:
            raise ValueError(f"{path.name}: Questionnaire {url} is defined twice")
        catalogue[url] = questionnaire
    return catalogue


def find_questionnaire(catalogue: Mapping[str, dict[str, Any]], canonical: str) -> dict[str, Any] | None:
    """The Questionnaire a canonical reference ("url" or "url|version") names, or None."""
    url, _, version = canonical.partition("|")
    questionnaire = catalogue.get(url)
    if questionnaire is None or (version and questionnaire.get("version") != version):
        return None
    return questionnaire


def iter_items(items: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Every item of a Questionnaire, depth first."""
    for item in items:
        yield item
        yield from iter_items(item.get("item", []))


def items_by_link_id(questionnaire: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {item["linkId"]: item for item in iter_items(questionnaire.get("item", []))}


def answer_value(answer: Mapping[str, Any]) -> Any:
    """The value[x] of one QuestionnaireResponse answer, or None when it carries only nested items."""
    return next((value for key, value in answer.items() if key.startswith("value")), None)


def answers_by_link_id(qr: Mapping[str, Any]) -> dict[str, list[Any]]:
    """All answer values of a QuestionnaireResponse by linkId, walking groups and answers' nested items."""
    found: dict[str, list[Any]] = {}
    _collect(qr.get("item", []), found)
    return found


def _collect(items: Sequence[Mapping[str, Any]], found: dict[str, list[Any]]) -> None:
    for item in items:
        for answer in item.get("answer", []):
            value = answer_value(answer)
            if value is not None and item.get("linkId") is not None:
                found.setdefault(item["linkId"], []).append(value)
            _collect(answer.get("item", []), found)
        _collect(item.get("item", []), found)


def is_enabled(item: Mapping[str, Any], answers: Answers) -> bool:
    """Whether an item's enableWhen conditions hold (enableBehavior "all" unless it says "any")."""
    conditions = item.get("enableWhen") or []
    if not conditions:
        return True
    results = [_condition_holds(condition, answers.get(condition["question"], [])) for condition in conditions]
    return any(results) if item.get("enableBehavior") == "any" else all(results)


_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le,
}


def _condition_holds(condition: Mapping[str, Any], given: Sequence[Any]) -> bool:
    # Operator meanings from http://hl7.org/fhir/questionnaire-enable-operator: "!=" holds when no
    # answer equals the expected one, so it also holds when the question is unanswered.
    expected = next(value for key, value in condition.items() if key.startswith("answer"))
    op = condition["operator"]
    if op == "exists":
        return bool(given) == expected
    if op == "=":
        return any(_same(value, expected) for value in given)
    if op == "!=":
        return not any(_same(value, expected) for value in given)
    compare = _ORDERINGS[op]
    return any(_ordered(value, expected) and compare(_key(value), _key(expected)) for value in given)


def _same(value: Any, expected: Any) -> bool:
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected  # True must not equal 1
    if isinstance(value, Mapping) and isinstance(expected, Mapping):
        if "code" in expected:  # Coding: the system counts only when both sides give one
            systems_agree = not (value.get("system") and expected.get("system")) or (
                value["system"] == expected["system"])
            return systems_agree and value.get("code") == expected["code"]
        return _key(value) == _key(expected)
    return value == expected


def _ordered(value: Any, expected: Any) -> bool:
    """Both sides are numbers, ISO date/time strings or Quantities, so they can be compared."""
    def kind(v: Any) -> str | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, int | float) or (isinstance(v, Mapping) and "value" in v):
            return "number"
        return "text" if isinstance(v, str) else None

    return kind(value) is not None and kind(value) == kind(expected)


def _key(value: Any) -> Any:
    return value["value"] if isinstance(value, Mapping) and "value" in value else value
