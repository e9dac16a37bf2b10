"""Which linter rules a review runs, and what each finding is about and how much it
matters.

The rule set is aimed at people learning Python: PEP 8 layout (pycodestyle's E/W
rules), likely bugs (pyflakes F, bugbear B, pylint errors PLE), naming (pep8-naming N),
simpler and more modern idioms (SIM, UP), and size and nesting (PLR09xx, PLR1702).
Cyclomatic complexity (C901) comes from radon, not the linter, so it is counted once.

Left out on purpose: W292/W391 (a missing or extra newline at the end is an artefact of
pasting code into a request), B904/B905/B912 (`raise ... from`, `zip(strict=)`:
correct advice, but noise for a beginner's exercise).
"""

from __future__ import annotations

from services.review.domain.model import Category, Severity

LINE_LENGTH = 88
COMPLEXITY_THRESHOLD = 10  # radon rank B ends at 10; above it a function is a finding
COMPLEXITY_ERROR = 20  # above this (radon rank D and worse) the finding is an error

SELECT = ("E", "W", "F", "N", "B", "UP", "SIM", "PLE", "PLR0913", "PLR0915", "PLW0603")
# pycodestyle's layout rules are preview rules in ruff; with `explicit-preview-rules`
# only these exact codes are enabled from preview, not every preview rule of a family.
PREVIEW = (
    *(f"E11{i}" for i in range(1, 8)),
    "E201", "E202", "E203", "E204", "E211",
    *(f"E22{i}" for i in range(1, 9)),
    "E231", "E241", "E242", "E251", "E252", "E261", "E262", "E265", "E266",
    *(f"E27{i}" for i in range(1, 6)),
    *(f"E30{i}" for i in range(1, 7)),
    "E502", "PLR1702",
)  # fmt: skip
IGNORE = ("W292", "W391", "B904", "B905", "B912")

SYNTAX_ERROR = "E999"
COMPLEXITY_RULE = "C901"

# Layout rules `ruff format` fixes: their suggestions come from formatting the code.
LAYOUT_PREFIXES = ("E1", "E2", "E3", "E502", "W1", "W2", "W3")

_CATEGORY_BY_PREFIX: tuple[tuple[str, Category], ...] = (
    # Longest prefixes first: the first match wins.
    ("PLR1702", Category.COMPLEXITY),
    ("PLR09", Category.READABILITY),
    ("PLW0603", Category.READABILITY),
    ("PLE", Category.CORRECTNESS),
    ("E711", Category.READABILITY),
    ("E712", Category.READABILITY),
    ("E713", Category.READABILITY),
    ("E714", Category.READABILITY),
    ("E721", Category.CORRECTNESS),
    ("E722", Category.CORRECTNESS),
    ("E731", Category.READABILITY),
    ("E74", Category.READABILITY),
    ("E9", Category.CORRECTNESS),
    ("W6", Category.CORRECTNESS),
    ("C9", Category.COMPLEXITY),
    ("E", Category.STYLE),
    ("W", Category.STYLE),
    ("F", Category.CORRECTNESS),
    ("B", Category.CORRECTNESS),
    ("N", Category.READABILITY),
    ("UP", Category.READABILITY),
    ("SIM", Category.READABILITY),
)

# Findings that are (almost) certainly bugs: the program fails or misbehaves.
_ERRORS = frozenset(
    {
        "E902", "E999", "F821", "F822", "F823", "F631", "F632", "F633", "F701", "F702",
        "F704", "F706", "F707", "F501", "F502", "F503", "F504", "F505", "F506", "F507",
        "F508", "F509", "F521", "F522", "F523", "F524", "F525", "B002",
    }
)  # fmt: skip
# Readability findings that deserve more than a note: names and size.
_READABILITY_WARNINGS = ("N", "E74", "PLR09", "PLW0603")


def category_of(rule: str) -> Category:
    for prefix, category in _CATEGORY_BY_PREFIX:
        if rule.startswith(prefix):
            return category
    return Category.CORRECTNESS  # an unknown rule from the linter is treated as a bug risk


def severity_of(rule: str, category: Category) -> Severity:
    if rule in _ERRORS or rule.startswith("PLE"):
        return Severity.ERROR
    if category is Category.STYLE:
        return Severity.INFO
    if category is Category.READABILITY:
        return Severity.WARNING if rule.startswith(_READABILITY_WARNINGS) else Severity.INFO
    return Severity.WARNING  # correctness and complexity


def complexity_severity(complexity: int) -> Severity:
    return Severity.ERROR if complexity > COMPLEXITY_ERROR else Severity.WARNING


def is_layout(rule: str) -> bool:
    return rule.startswith(LAYOUT_PREFIXES)


# Why a fix is better, for the rules students meet most; others get the linter's words.
RATIONALE: dict[str, str] = {
    "F401": "An unused import makes readers look for code that uses it, and costs start-up time.",
    "F841": "A variable that is assigned but never read is usually a leftover or a typo "
    "for another name.",
    "F811": "Redefining a name hides the first definition; only the last one is used.",
    "E711": "`None` is a single object: `is None` asks exactly that, while `== None` "
    "can be fooled by a class's `__eq__`.",
    "E712": "An `if` already tests truth: `if done:` reads better than `if done == True:`.",
    "E713": "`x not in y` reads as English and is what PEP 8 recommends.",
    "E714": "`x is not y` reads as English and is what PEP 8 recommends.",
    "E731": "A `def` gives the function a name in tracebacks and room for a docstring.",
    "E703": "Python statements do not end with a semicolon.",
    "E401": "One import per line keeps diffs small and imports easy to scan (PEP 8).",
    "W605": "An unknown backslash escape is a warning today and an error in future "
    "Python versions; use a raw string or a double backslash.",
    "UP": "Newer syntax for the same thing: shorter and what current Python code uses.",
    "SIM": "A simpler form of the same logic is easier to read and to get right.",
    "B": "This pattern is a common source of bugs.",
}
LAYOUT_RATIONALE = (
    "PEP 8 layout (spaces around operators and after commas, two blank lines around "
    "top-level definitions, consistent indentation) makes code easier to read. "
    "`ruff format` produces this layout automatically."
)
UNSAFE_NOTE = " This fix can change behaviour in rare cases: check it before applying."


def rationale_for(rule: str, fallback: str) -> str:
    for key in (rule, rule.rstrip("0123456789")):
        if key in RATIONALE:
            return RATIONALE[key]
    return fallback
