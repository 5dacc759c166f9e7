"""Every page of an MLflow search: one page of ``max_results`` silently drops the rest."""

from __future__ import annotations

from typing import Any

#: Rows asked for per page (MLflow's servers cap a page; thousands of trial runs share a filter).
_PAGE = 1000


def all_pages(search: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """Every page of an MLflow search (``client.search_runs``, ``search_model_versions``, ...)."""
    found, token = [], None
    while True:
        page = search(*args, max_results=_PAGE, page_token=token, **kwargs)
        found += list(page)
        token = page.token
        if not token:
            return found
