"""The daemon config and the rule files: YAML in, frozen validated models out.

Every error names its file and line, and all of them are reported at once::

    config/runwatch.yaml:14: routes[0]: undefined receiver "pagerduty" used in route
    rules/gpu.yaml:7: rule 'grad-spike': unknown kind 'thresold' (expected one of ...)
"""

from runwatch.config.errors import SECRET_FIELDS, ConfigError
from runwatch.config.loader import Checked, check_all, default_config, load_all, load_config
from runwatch.config.models import Config, Digest, Http, Inhibit, Route, default_rules_path
from runwatch.config.receivers import (
    EmailReceiver,
    Receiver,
    SlackReceiver,
    WebhookReceiver,
)
from runwatch.config.rules import RuleSet, load_rules, rule_files
from runwatch.config.sources import RundirSource, Source, WandbFilters, WandbSource

__all__ = [
    "SECRET_FIELDS", "Checked", "Config", "ConfigError", "Digest", "EmailReceiver", "Http",
    "Inhibit", "Receiver", "Route", "RuleSet", "RundirSource", "SlackReceiver", "Source",
    "WandbFilters", "WandbSource", "WebhookReceiver", "check_all", "default_config",
    "default_rules_path", "load_all", "load_config", "load_rules", "rule_files",
]
