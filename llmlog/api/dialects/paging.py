"""Page-numbered paging, as new-api and AI Proxy take it: a page from 1 and a page size from 1 to
MAX_PAGE_SIZE, never ending deeper than MAX_PAGE_DEPTH records. One value parses it in the views and
documents it in the schema, so the schema says what the views do. (OneUptime pages by skip and limit,
from 0: its own.)"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from drf_spectacular.utils import OpenApiParameter

from llmlog.api.dialects.common import MAX_PAGE_SIZE, check_page_depth, int_param
from llmlog.queries import MAX_PAGE_DEPTH


class Page(NamedTuple):
    number: int
    size: int
    offset: int


@dataclass(frozen=True)
class PageParams:
    """A dialect's names for the page and its size, the size when none is asked, and the parameters
    that narrow the time range (named when a page is too deep)."""

    page: str
    size: str
    default_size: int
    narrow_with: str

    def parse(self, params: Mapping[str, Any]) -> Page:
        """The page asked for; a 400 naming the parameter when it is out of bounds."""
        number = int_param(params, self.page, default=1, minimum=1)
        size = int_param(params, self.size, default=self.default_size, minimum=1, maximum=MAX_PAGE_SIZE)
        offset = (number - 1) * size
        check_page_depth(offset=offset, size=size, param=self.page, narrow_with=self.narrow_with)
        return Page(number, size, offset)

    def parameters(self) -> list[OpenApiParameter]:
        """The two parameters in OpenAPI, with the bounds `parse` holds them to."""
        return [
            OpenApiParameter(
                self.page,
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_DEPTH},
                description=f"Page, from 1; {self.page} × {self.size} ≤ {MAX_PAGE_DEPTH}.",
            ),
            OpenApiParameter(
                self.size,
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                description=f"Default {self.default_size}, at most {MAX_PAGE_SIZE}.",
            ),
        ]
