"""HTML pieces shared by the clip report and the batch summary: the page, sections, figures, tables.

Pages are self-contained: inline CSS (and, for the summary, a few lines of inline script), images
as ``data:`` URIs, and a Content-Security-Policy that lets the page load nothing from anywhere.
"""

import html
import json
from typing import Any

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  background: #f4f5f7; color: #1d2126; }
main { max-width: 1000px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 22px; margin: 8px 0 12px; }
section { background: #fff; border-radius: 8px; padding: 12px 18px 16px; margin: 14px 0;
  box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h2 { font-size: 17px; margin: 4px 0 10px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0 0 12px; }
dt { color: #5b6470; } dd { margin: 0; word-break: break-all; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 6px; border-bottom: 1px solid #e3e6ea; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f2f5; position: sticky; top: 0; }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: #9aa3ad; }
th[aria-sort="ascending"]::after { content: " \\25B2"; color: #1d2126; }
th[aria-sort="descending"]::after { content: " \\25BC"; color: #1d2126; }
figure { margin: 0; } figure img { max-width: 100%; display: block; margin: 4px 0; }
figcaption, .caption { color: #3c444d; font-size: 13px; margin-top: 6px; }
.na { color: #7a4b00; background: #fff6e0; padding: 6px 10px; border-radius: 4px; }
.note { color: #5b6470; font-size: 12px; }
.legend { font-size: 12px; margin-top: 4px; }
.key { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px;
  vertical-align: -1px; border-radius: 2px; }
svg.timeline { max-width: 100%; height: auto; font: 12px system-ui, sans-serif; }
.sheet { display: flex; flex-wrap: wrap; gap: 10px; }
.thumb { background: #fafafa; border: 1px solid #e3e6ea; border-radius: 4px; padding: 4px; }
.thumb img { max-height: 300px; }
.thumb figcaption { max-width: 460px; }
.status-failed { color: #b3261e; font-weight: 600; } .status-done { color: #2e7d32; }
.scroll { overflow-x: auto; } main:has(.wide) { max-width: 1320px; } .wide { overflow-x: auto; } .wide table { font-size: 12px; } .wide th { vertical-align: bottom; }
pre { background: #f6f8fa; padding: 8px; font-size: 12px; overflow: auto; }
"""


def page(title: str, body: str, script: str = "") -> str:
    """A complete HTML document; ``title`` and ``body`` are HTML (already escaped)."""
    tag = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title><style>{STYLE}</style></head>\n"
        f"<body><main><h1>{title}</h1>\n{body}\n</main>{tag}</body></html>\n"
    )


def section(ident: str, heading: str, inner: str) -> str:
    return f'<section id="{ident}"><h2>{html.escape(heading)}</h2>\n{inner}\n</section>'


def _attr(value: Any) -> str:
    return html.escape(json.dumps(value, separators=(",", ":")), quote=True)


def figure(name: str, inner: str, caption: str, values: Any, segments: Any | None = None) -> str:
    """A figure whose ``data-values`` holds the numbers it shows (and ``data-segments`` for the
    timeline), so tests and scripts can read them back."""
    extra = f' data-segments="{_attr(segments)}"' if segments is not None else ""
    return (
        f'<figure data-figure="{name}" data-values="{_attr(values)}"{extra}>{inner}'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def table(
    headers: list[str], rows: list[tuple[Any, list[tuple[str, str]]]], sortable: bool = False
) -> str:
    """A table; each row is (row key, [(column key, cell HTML)]); cells carry ``data-key``.
    ``sortable`` marks the headers for the summary page's sorting script."""
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th{cls}>{html.escape(h)}</th>" for h in headers)
    body = []
    for key, cells in rows:
        tds = "".join(f'<td data-key="{k}">{v}</td>' for k, v in cells)
        body.append(f'<tr data-row="{html.escape(str(key))}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
