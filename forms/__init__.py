"""Village Sync form engine: definitions, expressions, validation, instruments (no Flask, no DB).

The public API of the core engine is re-exported here; see docs/forms.md.
"""

from forms.definition import (
    Check,
    Choice,
    Field,
    FieldType,
    FormDefinition,
    UpgradeSpec,
    dump_definition,
    load_definition,
)
from forms.errors import (
    DefinitionIssue,
    EvaluationError,
    ExpressionError,
    FormDefinitionError,
    FormsError,
    PathError,
    UnknownFieldError,
    UpgradeError,
)
from forms.expressions import Environment, EvaluationContext, Expression, parse_expression
from forms.paths import flatten, schema_path, unflatten
from forms.text import LocalizedText
from forms.validation import Issue, ValidationResult, prefill, validate_record
from forms.versioning import UpgradeResult, upgrade_record

__all__ = [
    "Check",
    "Choice",
    "DefinitionIssue",
    "Environment",
    "EvaluationContext",
    "EvaluationError",
    "Expression",
    "ExpressionError",
    "Field",
    "FieldType",
    "FormDefinition",
    "FormDefinitionError",
    "FormsError",
    "Issue",
    "LocalizedText",
    "PathError",
    "UnknownFieldError",
    "UpgradeError",
    "UpgradeResult",
    "UpgradeSpec",
    "ValidationResult",
    "dump_definition",
    "flatten",
    "load_definition",
    "parse_expression",
    "prefill",
    "schema_path",
    "unflatten",
    "upgrade_record",
    "validate_record",
]
