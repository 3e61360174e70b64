"""Context that raises or lowers what the rules say, so fewer alerts are false positives.

What a site already knows about its own network is loaded from files (``[analysis]``) and
applied at two points. Before events are stored, an enrichment stage stamps what is known about
their endpoints (asset name, zone, criticality; the direction of the traffic between zones).
When an incident is created or updated, its evidence is weighed against the vulnerability
scans of the target (an IDS signature's CVE that the target has, or does not have) and every
incident gets a risk score that says which inputs moved it.

Modules: ``assets`` (inventory and longest-prefix lookup), ``vulns`` (scanner reports, the
CISA KEV catalog, NVD CVE files), ``idsrules`` (Snort/Suricata ``sid`` → CVE), ``risk`` (the
score and the severity policy), ``context`` (the running component that loads the files,
re-reads them on SIGHUP and serves the pipeline and the incident manager), ``cli``
(``appliance vuln import``); ``intel``/``feeds``/``intel_stage`` (threat intelligence),
``geoip``, ``baselines`` (rates, new terms, rarity), ``feedback`` (scoped suppressions) and
their ``*_api``/``intel_cli`` edges. Parsers are pure functions of bytes or text; files are
read at the edges (``context``, ``cli``, ``feeds``).
"""
