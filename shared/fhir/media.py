"""Content negotiation: what a client may ask for in Accept or _format, when the server writes FHIR JSON only."""
from __future__ import annotations

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_options_header

from shared.fhir.outcome import FhirError, Issue

FHIR_JSON = "application/fhir+json"
PRODUCED = (FHIR_JSON, "application/json", "application/json+fhir")  # the last is the DSTU2 name, still sent
FORMAT_ALIASES = {"json": FHIR_JSON, "fhir+json": FHIR_JSON}


def _matches(wanted: str, offered: str) -> bool:
    kind, _, sub = wanted.partition("/")
    offered_kind, _, offered_sub = offered.partition("/")
    return kind == "*" and sub in ("*", "") or (kind == offered_kind and sub in ("*", offered_sub))


def _fhir_version_ok(options: dict[str, str]) -> bool:
    version = {k.lower(): v for k, v in options.items()}.get("fhirversion")
    return version is None or version in ("4.0", "4.0.1")


def accepts_json(accept: str | None) -> bool:
    """Whether an Accept header admits one of the JSON types this server produces (q > 0, FHIR R4 if named)."""
    if not accept or not accept.strip():
        return True
    for value, quality in parse_accept_header(accept, MIMEAccept):
        mimetype, options = parse_options_header(value)
        if quality > 0 and _fhir_version_ok(options) and any(_matches(mimetype.lower(), p) for p in PRODUCED):
            return True
    return False


def format_is_json(requested: str) -> bool:
    """Whether a `_format` value (json, or a JSON media type with parameters) asks for what this server writes."""
    mimetype, options = parse_options_header(requested.strip().replace(" ", "+"))  # an unescaped + in a URL
    return FORMAT_ALIASES.get(mimetype.lower(), mimetype.lower()) in PRODUCED and _fhir_version_ok(options)


def negotiate(accept: str | None, formats: list[str]) -> None:
    """Refuse (406) a request for a representation this server cannot produce: `_format` decides when given
    (FHIR lets it override Accept for clients that cannot set headers), else Accept."""
    if formats:
        if all(format_is_json(f) for f in formats):
            return
        raise FhirError(406, [Issue("_format: this server writes FHIR JSON only (_format=json or "
                                    f"{FHIR_JSON})", code="not-supported", expression="_format")])
    if not accepts_json(accept):
        raise FhirError(406, [Issue(f"Accept: this server writes {', '.join(PRODUCED)} only (FHIR R4); "
                                    "ask for one of them, */* or application/*", code="not-supported")])
