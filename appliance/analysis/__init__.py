"""Analysis that lowers false positives: assets, vulnerabilities, intel, baselines, feedback."""
