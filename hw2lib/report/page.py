"""A report's page: an executed notebook rendered by nbconvert into one HTML file (figures
embedded), the set-up cells' code hidden, every other cell's code folded under a toggle, the
executed notebook linked on top."""

from __future__ import annotations

import os
from pathlib import Path

from hw2lib.core import io

HIDE_INPUT_TAG = "hide-input"


# nbconvert's `lab` page with each code cell's source folded under a "code" toggle (its outputs —
# figures, tables, findings, warnings — stay in view) and a link to the executed notebook on top.
_PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block input_group -%}
<details class="hw2-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
{%- block body_header -%}
{{ super() }}
{%- if resources.hw2_executed %}
<p class="hw2-executed">The executed notebook, with every cell's code and output:
<a href="{{ resources.hw2_executed | e }}">{{ resources.hw2_executed | e }}</a>.
Code is folded under each cell's <i>code</i> toggle.</p>
{%- endif %}
{%- endblock body_header -%}
{% block extra_css %}
{{ super() }}
<style>
details.hw2-code > summary {cursor: pointer; color: #666; font-size: .85em; margin: .2em 0 .2em 1em}
/* a table wider than the page scrolls within its output instead of being cut off */
.jp-OutputArea-output {overflow-x: auto; max-width: 100%}
p.hw2-executed {color: #555; font-size: .9em; margin: 1em 1.5em}
</style>
{% endblock extra_css %}
"""


def render_html(executed: Path, html_path: Path) -> int:
    """nbconvert HTML: set-up cells (tag `hide-input`) show outputs only, every other cell's code
    is folded under a toggle, the executed notebook is linked at the top; figures embedded."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(executed), as_version=4)
    exporter = HTMLExporter(template_name="lab", template_file="hw2-page.html.j2",
                            extra_loaders=[DictLoader({"hw2-page.html.j2": _PAGE_TEMPLATE})])
    tags = TagRemovePreprocessor(remove_input_tags={HIDE_INPUT_TAG}, enabled=True)
    exporter.register_preprocessor(tags, enabled=True)
    try:
        link = Path(os.path.relpath(executed, Path(html_path).parent)).as_posix()
    except ValueError:  # another drive
        link = str(executed)
    body, _ = exporter.from_notebook_node(nb, resources={"hw2_executed": link})
    io.atomic_write_text(html_path, body)
    return html_path.stat().st_size
