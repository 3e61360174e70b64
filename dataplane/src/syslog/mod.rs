//! Syslog: RFC 6587 framing and the RFC 5424 / RFC 3164 headers, as the Python reference in
//! `appliance/protocols/syslog/` decodes them (the differential tests hold both to the same
//! output).

pub mod batch;
pub mod framing;
pub mod header;
pub mod rfc3164;
pub mod rfc3339;
pub mod rfc5424;
