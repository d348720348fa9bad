"""Bundles the server returns: searchset, history, and the links that page through them."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from shared.fhir.store import Page, Stored
from shared.fhir.util import now_instant


def full_url(base: str, stored: Stored) -> str:
    return f"{base}/{stored.type}/{stored.id}"


def page_links(url: str, params: list[tuple[str, str]], total: int, count: int, offset: int) -> list[dict]:
    def link(relation: str, at: int) -> dict[str, str]:
        query = [*params, ("_count", str(count))] + ([("_offset", str(at))] if at else [])
        return {"relation": relation, "url": f"{url}?{urlencode(query)}"}

    links = [link("self", offset)]
    if count and offset + count < total:  # _count=0 asks for the total only: no page follows
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    return links


def searchset(base: str, url: str, params: list[tuple[str, str]], page: Page, count: int, offset: int,
              included: list[Stored] = (), more: bool = False, links: list[dict] | None = None) -> dict[str, Any]:
    """`more`: of an uncounted search (Page.total None), whether another page follows; `links`: those of a page
    read by key (shared.fhir.paging), else links by offset."""
    entries = [{"fullUrl": full_url(base, s), "resource": s.resource, "search": {"mode": "match"}}
               for s in page.items]
    entries += [{"fullUrl": full_url(base, s), "resource": s.resource, "search": {"mode": "include"}}
                for s in included]
    known = page.total if page.total is not None else offset + len(page.items) + (1 if more else 0)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "timestamp": now_instant()}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links if links is not None else page_links(url, params, known, count, offset)
    return {**bundle, "entry": entries} if entries else bundle  # FHIR JSON has no empty arrays


def history_entry(base: str, s: Stored) -> dict[str, Any]:
    status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[s.method]
    entry: dict[str, Any] = {
        "fullUrl": full_url(base, s),
        "request": {"method": s.method, "url": s.type if s.method == "POST" else f"{s.type}/{s.id}"},
        "response": {"status": status, "etag": s.etag, "lastModified": s.last_updated},
    }
    if not s.deleted:
        entry["resource"] = s.resource
    return entry


def history(base: str, url: str, page: Page, count: int, offset: int, params: list[tuple[str, str]]) -> dict:
    bundle = {"resourceType": "Bundle", "type": "history", "timestamp": now_instant(), "total": page.total,
              "link": page_links(url, params, page.total, count, offset)}
    return {**bundle, "entry": [history_entry(base, s) for s in page.items]} if page.items else bundle
