"""PATCH: a JSON Patch (RFC 6902, `application/json-patch+json`, applied by the jsonpatch library), a FHIRPath
Patch (a Parameters resource of `operation`s, its paths evaluated by fhirpathpy) or a JSON Merge Patch (RFC 7386:
`application/merge-patch+json`, or any other JSON object, as fhirpy and Aidbox send) turns the stored resource
into the new one, which is then validated and written exactly as an update is.

A patch that is not one is 400; one that cannot be applied to this resource (a path that finds nothing to
replace, a failed `test`) or that leaves an invalid resource is 422, and nothing is stored.
"""
from __future__ import annotations

import copy
import re
from typing import Any

import jsonpatch
import jsonpointer

from shared.fhir.outcome import FhirError, Issue
from shared.fhir.validation import element_is_list, validate_resource

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
FHIRPATH_TYPES = ("add", "insert", "delete", "replace", "move")
MARK = "iopPatchNode"  # tags each object while a path is evaluated, so what it finds can be located
_NAME_STEP = re.compile(r"(.+)\.([A-Za-z][A-Za-z0-9]*)")
_INDEX_STEP = re.compile(r"(.+)\[(\d+)\]")
Location = tuple[Any, Any]  # (the dict or list holding a node, its key or index)


def _bad(message: str, status: int = 400, expression: str | None = None) -> FhirError:
    return FhirError(status, [Issue(message, code="invalid" if status == 400 else "processing",
                                    expression=expression)])


def apply_json_patch(resource: dict[str, Any], document: list[Any]) -> dict[str, Any]:
    try:
        patch = jsonpatch.JsonPatch(document)
        return patch.apply(copy.deepcopy(resource))
    except jsonpatch.InvalidJsonPatch:
        raise _bad("not a JSON Patch: each operation needs op and path, and what that op takes") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError, IndexError):
        raise _bad("the JSON Patch cannot be applied to this resource (a path or test that does not hold)",
                   422) from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


# -- FHIRPath Patch ------------------------------------------------------------------------------


def _parts(parameter: dict[str, Any]) -> dict[str, Any]:
    return {p.get("name"): p for p in parameter.get("part", []) if isinstance(p, dict)}


def _value_of(part: dict[str, Any] | None) -> Any:
    """A patch value: `value[x]`, or for a backbone element its parts, each an element."""
    if part is None:
        return None
    for key, value in part.items():
        if key.startswith("value"):
            return value
    if "part" in part:
        return {p["name"]: _value_of(p) for p in part["part"] if isinstance(p, dict) and p.get("name")}
    return None


class _Document:
    """The resource being patched, with the nodes a FHIRPath finds located in it."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.root = copy.deepcopy(resource)
        self.rtype = resource.get("resourceType", "")

    def _mark(self) -> dict[int, tuple[Location, list[str]]]:
        where: dict[int, tuple[Location, list[str]]] = {}

        def walk(node: Any, location: Location, steps: list[str]) -> None:
            if isinstance(node, dict):
                where[len(where)] = (location, steps)
                node[MARK] = len(where) - 1
                for key, value in list(node.items()):
                    if key != MARK:
                        walk(value, (node, key), [*steps, key])
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    walk(value, (node, i), steps)

        walk(self.root, (None, None), [])
        return where

    def _unmark(self, node: Any) -> None:
        if isinstance(node, dict):
            node.pop(MARK, None)
            for value in node.values():
                self._unmark(value)
        elif isinstance(node, list):
            for value in node:
                self._unmark(value)

    def locate(self, path: str) -> list[tuple[Location, list[str]]]:
        """Where the nodes that `path` finds sit, with the element names leading to each."""
        # Imported here: fhirpathpy (and its ANTLR runtime) is some MiB that only a FHIRPath Patch needs.
        from fhirpathpy import evaluate
        from fhirpathpy.models import models

        where = self._mark()
        try:
            found = evaluate(self.root, path, {}, models["r4"])
        except Exception:  # noqa: BLE001 - fhirpathpy raises bare exceptions for expressions it cannot parse
            raise _bad(f"not a FHIRPath expression this server can evaluate: {path[:80]!r}") from None
        finally:
            self._unmark(self.root)
        if all(isinstance(n, dict) and MARK in n for n in found):
            return [where[n[MARK]] for n in found]
        if (step := _NAME_STEP.fullmatch(path)) is not None:  # a primitive element: found through its parent
            located = []
            for (holder, key), steps in self.locate(step.group(1)):
                parent = self.root if holder is None else holder[key]
                value = parent.get(step.group(2)) if isinstance(parent, dict) else None
                if isinstance(value, list):
                    located += [((value, i), [*steps, step.group(2)]) for i in range(len(value))]
                elif value is not None:
                    located.append(((parent, step.group(2)), [*steps, step.group(2)]))
            return located
        if (step := _INDEX_STEP.fullmatch(path)) is not None:
            located = self.locate(step.group(1))
            return located[int(step.group(2)):int(step.group(2)) + 1]
        raise _bad(f"the path {path[:80]!r} finds primitive values this server cannot locate; name their element")

    def one(self, path: str, op: str) -> tuple[Location, list[str]]:
        found = self.locate(path)
        if len(found) != 1:
            raise _bad(f"{op}: the path {path[:80]!r} finds {len(found)} elements, not one", 422)
        if found[0][0][0] is None:
            raise _bad(f"{op}: the path may not name the resource itself", 422)
        return found[0]

    def node(self, location: Location) -> Any:
        holder, key = location
        return self.root if holder is None else holder[key]

    def apply(self, op: dict[str, Any], i: int) -> None:
        kind, path = _value_of(op.get("type")), _value_of(op.get("path"))
        if kind not in FHIRPATH_TYPES or not isinstance(path, str):
            raise _bad(f"operation {i}: type must be one of {', '.join(FHIRPATH_TYPES)}, with a path",
                       expression=f"Parameters.parameter[{i}]")
        getattr(self, f"_{kind}")(path, op)

    def _add(self, path: str, op: dict[str, Any]) -> None:
        name, value = _value_of(op.get("name")), _value_of(op.get("value"))
        (location, steps) = self.one(path, "add") if path != self.rtype else ((None, None), [])
        target = self.node(location)
        if not isinstance(name, str) or value is None or not isinstance(target, dict):
            raise _bad("add needs a name and a value, at a path that finds an element with children", 422)
        if element_is_list(self.rtype, [*steps, name]):
            target.setdefault(name, []).append(value)
        else:
            target[name] = value

    def _insert(self, path: str, op: dict[str, Any]) -> None:
        value, index = _value_of(op.get("value")), _value_of(op.get("index"))
        items = self._list_at(path, "insert")
        if value is None or not isinstance(index, int) or not 0 <= index <= len(items):
            raise _bad(f"insert needs a value and an index from 0 to {len(items)}", 422)
        items.insert(index, value)

    def _delete(self, path: str, op: dict[str, Any]) -> None:
        found = self.locate(path)
        if len(found) > 1:
            raise _bad(f"delete: the path {path[:80]!r} finds {len(found)} elements, not one", 422)
        if found:  # FHIRPath Patch: deleting what is not there is no error
            (holder, key), _ = found[0]
            if holder is None:
                raise _bad("delete: the path may not name the resource itself", 422)
            del holder[key]
            self._drop_empty()

    def _replace(self, path: str, op: dict[str, Any]) -> None:
        value = _value_of(op.get("value"))
        (holder, key), _ = self.one(path, "replace")
        if value is None:
            raise _bad("replace needs a value", 422)
        holder[key] = value

    def _move(self, path: str, op: dict[str, Any]) -> None:
        source, destination = _value_of(op.get("source")), _value_of(op.get("destination"))
        items = self._list_at(path, "move")
        if not all(isinstance(n, int) and 0 <= n < len(items) for n in (source, destination)):
            raise _bad(f"move needs a source and a destination from 0 to {len(items) - 1}", 422)
        items.insert(destination, items.pop(source))

    def _list_at(self, path: str, op: str) -> list[Any]:
        """The list of a repeating element, from a path that finds its items (or none of them yet)."""
        step = _NAME_STEP.fullmatch(path)
        if step is None:
            raise _bad(f"{op} needs the path of a repeating element", 422)
        (location, steps) = self.one(step.group(1), op) if step.group(1) != self.rtype else ((None, None), [])
        parent = self.node(location)
        if not isinstance(parent, dict) or not element_is_list(self.rtype, [*steps, step.group(2)]):
            raise _bad(f"{op}: {path[:80]!r} is not a repeating element", 422)
        return parent.setdefault(step.group(2), [])

    def _drop_empty(self) -> None:
        """FHIR JSON has no empty arrays or objects: a delete that empties one removes it."""
        def prune(node: Any) -> None:
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for key, value in list(items):
                prune(value)
                if value in ([], {}):
                    del node[key]
        prune(self.root)


def apply_fhirpath_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    if parameters.get("resourceType") != "Parameters":
        raise _bad("a FHIRPath Patch is a Parameters resource", expression="resourceType")
    validate_resource(parameters, "Parameters")
    operations = parameters.get("parameter") or []
    if not operations or any(p.get("name") != "operation" for p in operations):
        raise _bad("a FHIRPath Patch holds operation parameters only", expression="Parameters.parameter")
    document = _Document(resource)
    for i, parameter in enumerate(operations):
        document.apply(_parts(parameter), i)
    return document.root


def patched(current: dict[str, Any], document: Any) -> dict[str, Any]:
    """The resource a patch makes of `current`, validated as an update would be (422 when it breaks it)."""
    if isinstance(document, list):
        new = apply_json_patch(current, document)
    elif document.get("resourceType") == "Parameters":
        new = apply_fhirpath_patch(current, document)
    else:
        new = merge_patch(current, document)
    if not isinstance(new, dict) or new.get("resourceType") != current["resourceType"] or \
            new.get("id") != current["id"]:
        raise _bad("a patch may not change the resource's type or id", 422)
    try:
        validate_resource(new, current["resourceType"])
    except FhirError as exc:
        raise FhirError(422, exc.issues) from None
    return new
