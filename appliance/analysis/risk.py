"""The risk score (0-100) of an incident and the severity policy, as pure functions.

The score is a product of how bad the rule says it is, how much the target matters and whether
the target can be hurt by it, plus what outside knowledge adds::

    risk = 100 x min(1, L x A x V + 0.2 x I + 0.1 x R)

- ``L`` rule level: informational 0.2, low 0.4, medium 0.6, high 0.8, critical 1.0 (the rule's
  own level, before any severity change, so the score does not count a match twice);
- ``A`` asset criticality: 0.5 + 0.1 x criticality (1-5 → 0.6-1.0) of the most critical asset
  the evidence touches; 0.8 (criticality 3) when no asset is known;
- ``V`` vulnerability match: 1.0 + 0.25 x CVSS/10 when the target has the signature's CVE
  (+0.25 more when the CVE is in the CISA KEV catalog, so up to 1.5); 0.25 when the target was
  scanned and lacks the CVE or the service (the attack cannot work there); 0.75 when unknown
  (no CVE for the signature, or the target not in any scan);
- ``I`` intel confidence 0-1 (``threat.indicator.confidence`` on the evidence: 0-100, or
  Low/Medium/High), 0 when absent;
- ``R`` rarity 0-1 (how unusual the evidence is for its key; 0 when unknown).

Worked examples: a medium IDS rule against an unscanned criticality-3 host scores
0.6 x 0.8 x 0.75 = 36; against a host whose scan lists the CVE at CVSS 9.8, 60; the same CVE in
KEV, 72; against a scanned host without the CVE, 12.

Severity moves by levels along informational < low < medium < high < critical: a vulnerability
match raises it ``vuln_match_raise`` levels, a KEV-listed match ``kev_raise`` more; an unmatched
IDS alert is lowered ``unmatched_lower`` levels, suppressed, or kept (``unmatched_ids``). Each
move carries its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("informational", "low", "medium", "high", "critical")
LEVEL_WEIGHT = {"informational": 0.2, "low": 0.4, "medium": 0.6, "high": 0.8, "critical": 1.0}
DEFAULT_CRITICALITY = 3
UNMATCHED_POLICIES = ("lower", "suppress", "keep")
CONFIDENCE_WORDS = {"none": 0.0, "not specified": 0.0, "low": 0.3, "medium": 0.6, "high": 0.9}

# Evidence fields other analysis sets (threat intel, baselines) that the score reads.
INTEL_CONFIDENCE_FIELD = "threat.indicator.confidence"
RARITY_FIELD = "analysis.rarity"

MATCHED = "matched"  # the target has the signature's CVE (on the port, where known)
UNMATCHED = "unmatched"  # the target was scanned and lacks the CVE, or lacks the service
UNKNOWN = "unknown"  # nothing to compare: no CVE for the signature, or the target unscanned


@dataclass(frozen=True, slots=True)
class Policy:
    vuln_match_raise: int = 1
    kev_raise: int = 1
    unmatched_ids: str = "lower"
    unmatched_lower: int = 1


@dataclass(slots=True)
class RiskInputs:
    rule_level: str = "medium"
    asset_criticality: int | None = None
    asset: str = ""  # the asset that criticality came from (name or address)
    vuln_match: str = UNKNOWN
    cves: list[str] = field(default_factory=list)  # the signature's CVEs
    matched_cves: list[str] = field(default_factory=list)
    cvss: float | None = None  # highest CVSS among the matched CVEs
    kev: bool = False
    unmatched_why: str = ""  # "no_cve" | "no_service" when vuln_match is unmatched
    intel_confidence: float | None = None  # 0..1
    rarity: float = 0.0  # 0..1

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_level": self.rule_level,
            "asset_criticality": self.asset_criticality,
            "asset": self.asset,
            "vuln_match": self.vuln_match,
            "cves": self.cves,
            "matched_cves": self.matched_cves,
            "cvss": self.cvss,
            "kev": self.kev,
            "intel_confidence": self.intel_confidence,
            "rarity": self.rarity,
        }


@dataclass(slots=True)
class Assessment:
    inputs: RiskInputs
    score: int
    severity: str
    reasons: list[str]  # what moved the score
    severity_reasons: list[str]  # what moved the severity away from the rule's level
    suppress: bool = False  # the unmatched policy says: do not raise an incident


def intel_confidence(value: Any) -> float | None:
    """``threat.indicator.confidence`` as 0-1: a number 0-100 or a Low/Medium/High word."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(0.0, min(1.0, float(value) / 100.0))
    text = str(value).strip().lower()
    if text in CONFIDENCE_WORDS:
        return CONFIDENCE_WORDS[text]
    try:
        return max(0.0, min(1.0, float(text) / 100.0))
    except ValueError:
        return None


def rarity(value: Any) -> float:
    """``analysis.rarity`` as 0-1 (0 when absent or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        return max(0.0, min(1.0, float(value)))
    except ValueError:
        return 0.0


def vuln_factor(i: RiskInputs) -> float:
    if i.vuln_match == MATCHED:
        cvss = i.cvss if i.cvss is not None else 5.0
        return 1.0 + 0.25 * cvss / 10.0 + (0.25 if i.kev else 0.0)
    if i.vuln_match == UNMATCHED:
        return 0.25
    return 0.75


def risk_score(i: RiskInputs) -> tuple[int, list[str]]:
    """The score (module docstring) and the reasons for each input that moved it."""
    level = LEVEL_WEIGHT.get(i.rule_level, LEVEL_WEIGHT["medium"])
    crit = i.asset_criticality if i.asset_criticality is not None else DEFAULT_CRITICALITY
    a = 0.5 + 0.1 * crit
    v = vuln_factor(i)
    conf = i.intel_confidence or 0.0
    rarity = max(0.0, min(1.0, i.rarity))
    score = round(100 * min(1.0, level * a * v + 0.2 * conf + 0.1 * rarity))
    reasons = [f"rule level {i.rule_level} ({level:g})"]
    if i.asset_criticality is not None:
        reasons.append(f"asset {i.asset} criticality {i.asset_criticality} ({a:g})")
    if i.vuln_match == MATCHED:
        cvss = f"CVSS {i.cvss:g}" if i.cvss is not None else "CVSS unknown"
        kev = ", in CISA KEV" if i.kev else ""
        reasons.append(f"target has {', '.join(i.matched_cves)} ({cvss}{kev}) (x{v:g})")
    elif i.vuln_match == UNMATCHED:
        reasons.append(f"target not vulnerable: {_unmatched_text(i)} (x{v:g})")
    if conf:
        reasons.append(f"threat intel confidence {conf:g} (+{20 * conf:g})")
    if rarity:
        reasons.append(f"rarity {rarity:g} (+{10 * rarity:g})")
    return score, reasons


def _unmatched_text(i: RiskInputs) -> str:
    if i.unmatched_why == "no_service":
        return f"{i.asset or 'the target'} does not run the attacked service"
    return f"the scan of {i.asset or 'the target'} does not list {', '.join(i.cves)}"


def shift(severity: str, levels: int) -> str:
    at = SEVERITIES.index(severity) if severity in SEVERITIES else 2
    return SEVERITIES[max(0, min(len(SEVERITIES) - 1, at + levels))]


def assess(i: RiskInputs, policy: Policy) -> Assessment:
    """The score and the severity policy applied to one hit's inputs."""
    score, reasons = risk_score(i)
    severity = i.rule_level if i.rule_level in SEVERITIES else "medium"
    moves: list[str] = []
    suppress = False
    if i.vuln_match == MATCHED:
        cves = ", ".join(i.matched_cves)
        if policy.vuln_match_raise:
            new = shift(severity, policy.vuln_match_raise)
            moves.append(f"{severity} → {new}: target {i.asset} has {cves} (scan)")
            severity = new
        if i.kev and policy.kev_raise:
            new = shift(severity, policy.kev_raise)
            moves.append(f"{severity} → {new}: {cves} known exploited (CISA KEV)")
            severity = new
    elif i.vuln_match == UNMATCHED:
        if policy.unmatched_ids == "suppress":
            suppress = True
            moves.append(f"suppressed: {_unmatched_text(i)}")
        elif policy.unmatched_ids == "lower" and policy.unmatched_lower:
            new = shift(severity, -policy.unmatched_lower)
            moves.append(f"{severity} → {new}: {_unmatched_text(i)}")
            severity = new
    return Assessment(i, score, severity, reasons, moves, suppress)


def apply(doc: dict[str, Any], a: Assessment, *, new: bool) -> None:
    """Put a hit's assessment on an incident document.

    The incident keeps its worst hit: the highest score and the most severe severity seen, with
    that hit's inputs and reasons (a later milder hit does not calm an incident down).
    """
    risk = doc.get("risk")
    if not isinstance(risk, dict):
        risk = doc["risk"] = {"severity_base": doc.get("severity", a.inputs.rule_level)}
    risk.setdefault("unmatched_hits", 0)
    if a.inputs.vuln_match == UNMATCHED:
        risk["unmatched_hits"] += 1
    old_rank = SEVERITIES.index(doc["severity"]) if doc.get("severity") in SEVERITIES else 2
    if new or SEVERITIES.index(a.severity) > old_rank:
        doc["severity"] = a.severity
        risk["severity_reasons"] = a.severity_reasons
    else:
        risk.setdefault("severity_reasons", [])
    if new or a.score > int(doc.get("risk_score") or 0) or "inputs" not in risk:
        doc["risk_score"] = a.score
        risk["inputs"] = a.inputs.to_dict()
        risk["reasons"] = a.reasons
