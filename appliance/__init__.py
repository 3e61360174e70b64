"""SEM appliance agent: syslog, SNMP traps and NetFlow/IPFIX in; correlated incidents out."""

__version__ = "0.1.0"
