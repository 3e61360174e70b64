"""The built-in Sigma ruleset (YAML files in this package's folders)."""
