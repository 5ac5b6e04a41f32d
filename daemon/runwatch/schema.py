"""The JSON Schema of rule files and of the daemon config (``runwatch schema``).

Generated from the pydantic models that validate them, so it cannot drift from the
loader: each field type that YAML spells differently from Python (``10m``, ``500 steps``,
one name for a list of one) carries its own schema beside its validator. Editors that
speak the YAML language server (VS Code's YAML extension, JetBrains IDEs, Neovim's
yamlls) complete and check a file whose first line names the schema::

    # yaml-language-server: $schema=<path or URL of the schema>

What the schema cannot say, the loader still checks: a `${VAR}` in a field that is not
text is expanded before validation, while an editor sees the text; checks across fields
and files (a route naming an unknown receiver, a rule name used twice) are the loader's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from runwatch.checks import Rule

DIALECT = "https://json-schema.org/draft/2020-12/schema"


class RuleFile(BaseModel):
    """A rule file: a mapping with a ``rules:`` list."""

    model_config = ConfigDict(extra="forbid", title="runwatch rule file")

    rules: list[Rule]


def rules_schema() -> dict[str, Any]:
    """The JSON Schema of a rule file."""
    return {"$schema": DIALECT, **RuleFile.model_json_schema()}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the daemon config file."""
    from runwatch.config.models import Config

    schema = Config.model_json_schema()
    schema["title"] = "runwatch config"
    return {"$schema": DIALECT, **schema}


SCHEMAS = {"rules": rules_schema, "config": config_schema}
