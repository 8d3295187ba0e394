//! Accepting connections under limits (issue 17 §2), shared by every listener of the gateway:
//! the FHIR API, its mutual-TLS listener and the MLLP intake.
//!
//! - [`Gate`]: at most `max_connections` connections of a listener at once, and at most
//!   `max_per_peer` from one address; a connection over either is turned away at accept (the
//!   caller decides how: a closed socket, or an HTTP answer). Each admitted connection holds a
//!   [`Ticket`] until it closes. A full gate that evicts (the API's) closes its oldest connection
//!   that has not yet carried an authenticated request to admit a newcomer.
//! - [`Gate::accept`]: errors of `accept(2)` (out of descriptors above all) are logged at most
//!   once a second and backed off exponentially, never spun on.
//! - [`Watched`]: a stream that fails a write stalled longer than its limit (a peer that stops
//!   reading), and a read that waits longer than the keep-alive limit after the last write (a
//!   peer that keeps a connection open without a new request).
//! - [`Cidr`]: the address ranges a sender may connect from.
//! - [`descriptors`]: the process's open-file limit raised to its hard maximum, and listener caps
//!   fitted under it with a reserve for the store, journals and outbound connections, so that
//!   clients can never take the descriptors the gateway itself needs.
//! - [`client`]: outbound HTTP/1.1 connections to a hospital's systems, plain or TLS trusting
//!   the CA the operator names for that system.

mod cidr;
pub mod client;
pub mod descriptors;
mod gate;
mod watched;

pub use cidr::{Cidr, CidrError};
pub use gate::{Admission, Evictable, Gate, Limits, Ticket};
pub use watched::Watched;
