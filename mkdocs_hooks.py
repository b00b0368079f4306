"""MkDocs hooks of the documentation site (mkdocs.yml `hooks:`).

docs/install.md shows the "Install" section of README.md, kept in one place: a page line `<!-- README.md:NAME -->`
is replaced by the README's text between `<!-- --8<-- [start:NAME] -->` and `<!-- --8<-- [end:NAME] -->`. That
text's links are written from the repository root (`docs/hub.md`); in the site the pages are siblings (`hub.md`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_INCLUDE = re.compile(r"^<!-- README\.md:(?P<name>[\w-]+) -->$", re.MULTILINE)
_DOCS_LINK = re.compile(r"\]\(docs/")


def _readme_section(config: Any, name: str) -> str:
    readme = (Path(config["config_file_path"]).parent / "README.md").read_text(encoding="utf-8")
    start, end = f"<!-- --8<-- [start:{name}] -->", f"<!-- --8<-- [end:{name}] -->"
    if start not in readme or end not in readme:
        raise ValueError(f"README.md has no section {name!r} ({start} ... {end})")
    return _DOCS_LINK.sub("](", readme.split(start, 1)[1].split(end, 1)[0].strip())


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    return _INCLUDE.sub(lambda match: _readme_section(config, match["name"]), markdown)
