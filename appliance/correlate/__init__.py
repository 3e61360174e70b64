"""Streaming correlation: Sigma rules compiled to predicates, correlations on event time."""

from appliance.correlate.engine import Alert, Engine, Limits
from appliance.correlate.rules import RuleSet, load_rules

__all__ = ["Alert", "Engine", "Limits", "RuleSet", "load_rules"]
