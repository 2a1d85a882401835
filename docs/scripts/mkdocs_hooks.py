"""MkDocs hooks for the site (named in mkdocs.yml).

The docstrings introduce their code examples with reStructuredText's ``Example::``, which
Markdown shows as written; the API pages show a single colon instead.
"""

from __future__ import annotations

import re

_LITERAL_BLOCK_MARKER = re.compile(r"(<p>(?:(?!</p>).)*?)::</p>", re.DOTALL)


def on_page_content(html: str, **kwargs: object) -> str:
    return _LITERAL_BLOCK_MARKER.sub(r"\1:</p>", html)
