"""How the package's documents are drawn: one template folder, one Jinja environment, one default statement.

Every template lives in ``clinical_mtl/reporting/templates/``: the patient
pages and their index (HTML) and the model card (Markdown and HTML). They are
all rendered by :func:`template_environment`, strict about undefined names and
escaping every value that comes from data. Model cards and patient pages print
the same statement of intended use unless told otherwise
(:data:`DEFAULT_INTENDED_USE`); pages add their limits (:data:`DEFAULT_LIMITS`).
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

DEFAULT_INTENDED_USE = (
    "Research and method development: statistical estimates of several outcomes for patients like those of "
    "the training cohort, from routinely collected values. Not a medical device and not validated for "
    "decisions about individual patients: the estimates are not diagnoses, and any clinical use needs "
    "external validation in the target population."
)
"""What a model card and a patient page say the model is for, unless the pipeline or caller says otherwise."""

DEFAULT_LIMITS = (
    "Valid only for patients like those of the training cohort; values far outside its range, or "
    "measured differently, make predictions unreliable. Contributions describe how the model uses each "
    "value, not causes, and can shift when values are correlated. Missing values were imputed with the "
    "training cohort's typical value."
)
"""The limits a patient page states, unless the pipeline or caller says otherwise."""


def template_environment(*, markdown: bool = False) -> Environment:
    """The Jinja environment of every template of the package.

    Undefined names fail the rendering (``StrictUndefined``) rather than
    printing nothing. HTML is autoescaped: ids, categories and schema texts
    all come from data. Markdown escapes every printed value through
    ``finalize`` instead (``&``, ``<``, ``>`` as entities, ``|`` escaped, one
    line), since Markdown renderers pass raw HTML through and a ``|`` would
    break a table; what a template macro has already rendered (``Markup``)
    passes as it is.

    Parameters
    ----------
    markdown : bool, default=False
        Render Markdown rather than HTML.

    Returns
    -------
    jinja2.Environment
        A new one on each call (callers may adjust it, as tests do).
    """
    return Environment(
        loader=PackageLoader("clinical_mtl.reporting", "templates"),
        autoescape=not markdown,
        finalize=_markdown_text if markdown else None,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _markdown_text(value) -> str:
    if isinstance(value, Markup):  # a table already rendered by the template's macro
        return value
    text = "" if value is None else str(value)
    for character, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(character, escaped)
    return " ".join(text.split("\n"))
