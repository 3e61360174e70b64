"""The fuzz targets by name: Python modules here (atheris), Rust ones in ``dataplane/fuzz/``.

A Python target module defines ``MAX_LEN`` (the longest input worth trying), ``seeds()``
(complete inputs to start from) and ``one_input(data)``, which raises only when the parser
breaks its contract.
"""

from __future__ import annotations

PYTHON_TARGETS: dict[str, str] = {
    "syslog-header": "syslog_header",
    "syslog-native": "syslog_native",
    "syslog-framing": "syslog_framing",
    "syslog-vendors": "syslog_vendors",
    "syslog-batch": "syslog_batch",
    "netflow": "netflow",
    "snmp": "snmp",
    "config": "config",
    "api-params": "api_params",
    "analysis-files": "analysis_files",
    "rule-matcher": "rule_matcher",
    "correlation-windows": "correlation_windows",
}
# cargo-fuzz target name in dataplane/fuzz/fuzz_targets/, and which Python target's seeds it
# starts from (the same bytes reach the same parser).
RUST_TARGETS: dict[str, tuple[str, str]] = {
    "rust-header": ("header", "syslog-header"),
    "rust-framer": ("framer", "syslog-framing"),
    "rust-rules": ("rules", "rule-matcher"),
    # Its input is a record layout and a data set body, not a datagram stream: the netflow
    # seeds are only starting bytes there.
    "rust-netflow": ("netflow", "netflow"),
    # The stateful decoder reads the netflow target's own datagram streams.
    "rust-netflow-state": ("netflow_state", "netflow"),
    "rust-decoder": ("decoder", "syslog-vendors"),
    "rust-linux-auth": ("linux_auth", "syslog-vendors"),
    # A batch of datagrams (split at 0x1e) through the policy and the header decoder.
    "rust-batch": ("batch", "syslog-header"),
    "rust-windows": ("windows", "correlation-windows"),
}
ALL_TARGETS = [*PYTHON_TARGETS, *RUST_TARGETS]
