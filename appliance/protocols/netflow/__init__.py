"""Sans-I/O NetFlow v5/v9 and IPFIX: datagram bytes + exporter + ``now`` → flow records."""

from appliance.protocols.netflow.decoder import DecoderLimits, Malformed, NetflowDecoder, Record

__all__ = ["DecoderLimits", "Malformed", "NetflowDecoder", "Record"]
