"""MkDocs hook: links in the notebooks point into the repository (``../docs/theory.md#conventions``, right on
GitHub, where the notebooks live in ``notebooks/``); on the site, where they are shown under ``notebooks/``
beside the pages, those links are rewritten to the pages themselves."""

import re

from mkdocs.utils import get_relative_url

_LINK = re.compile(r'href="\.\./docs/([^"#]+\.md)(#[^"]*)?"')


def on_page_content(html, page, config, files, **kwargs):
    if not page.file.src_uri.startswith("notebooks/"):
        return html

    def rewrite(match):
        target = files.get_file_from_path(match.group(1))
        if target is None:  # not a page of the site: leave the link as it is (strict builds report it)
            return match.group(0)
        return f'href="{get_relative_url(target.url, page.url)}{match.group(2) or ""}"'

    return _LINK.sub(rewrite, html)
