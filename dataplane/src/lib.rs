//! The SEM appliance's data plane: what runs once per message, in Rust, behind a small Python
//! API (`appliance._dataplane`). The Python package keeps a reference implementation of each
//! piece; the test suite holds both to the same output.
//!
//! Modules are pure Rust with no interpreter in sight (tested and fuzzed with `cargo test`);
//! `python` is the only place that touches PyO3.

pub mod baselines;
pub mod bookkeeping;
pub mod cef;
pub mod decoders;
pub mod jsonnum;
pub mod jsonstr;
pub mod kv;
pub mod linux_auth;
pub mod netflow;
pub mod netflow_state;
pub mod recent;
pub mod rollup;
pub mod rules;
pub mod segindex;
pub mod segpack;
pub mod syslog;
pub mod udp_receiver;
pub mod windows;

#[cfg(feature = "python")]
mod python;

// One native call per syslog batch (recvmmsg or a stream read): policy, decode, events.
#[cfg(feature = "python")]
mod python_batch;

// Correlation windows (event_count, value_count, temporal_ordered) bound for the engine.
#[cfg(feature = "python")]
mod python_windows;

// Absence and baseline bookkeeping (bookkeeping.rs) bound for the engine.
#[cfg(feature = "python")]
mod python_bookkeeping;

// Decoded flows kept native, each made a Python event only when asked for.
#[cfg(feature = "python")]
mod python_flowevents;

// The NetFlow decoder with its template state (netflow_state.rs), batch per call.
#[cfg(feature = "python")]
mod python_netflow;

// The engine's per-event bookkeeping over a slice: matching, watermark and native windows.
#[cfg(feature = "python")]
mod python_observe;

// The baselines stage's per-event loop over a batch (counting, new terms, rarity).
#[cfg(feature = "python")]
mod python_baselines;

// The stored line written from the event's Python objects (no orjson on the hot path).
#[cfg(feature = "python")]
mod python_line;

// The native UDP receiver (udp_receiver.rs) as the event loop takes its slices.
#[cfg(feature = "python")]
mod python_udp;

// A batch's segments finished (search filters, packed bodies) on a thread that never
// takes the interpreter.
#[cfg(feature = "python")]
mod python_segindex;

// A stored batch's segment rows made in one pass over its events.
#[cfg(feature = "python")]
mod python_segments;

// The normalized event as a native class (the dataclass in appliance/event.py is its
// reference).
#[cfg(feature = "python")]
mod python_event;

// An event's fields as the batch decode sets them, the dict made when Python reads it.
#[cfg(feature = "python")]
mod python_record;
