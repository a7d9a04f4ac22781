//! The sans-IO TFTP core: codec and transfer state machines, shared by the server (`tftpd`)
//! and the client (`relay`). No sockets, no tokio, no clock, no filesystem: time comes in as
//! an `Instant` parameter, datagrams come in as byte slices, and what to send comes out of
//! `poll_transmit`. That is what lets the tests below simulate loss, duplication,
//! reordering, delay and 137,721-block transfers deterministically in milliseconds.
//!
//! # Layout
//! - [`packet`]: RRQ/WRQ/DATA/ACK/ERROR/OACK encode and decode (RFC 1350, RFC 2347).
//! - [`options`]: the server's option negotiation (RFC 2348, 2349, 7440, tftpd-hpa extras).
//! - [`client`]: the client's side of negotiation (building requests, checking OACKs).
//! - [`block`]: block numbers past 65535 (rollover).
//! - [`netascii`]: netascii conversion both ways.
//! - [`Sender`] / [`Receiver`]: the two transfer state machines, each with a server and a
//!   client constructor; [`RetransmitPolicy`] is tftpd-hpa's doubling schedule.
//!
//! # Driving a machine
//! ```text
//! loop {
//!     while let Some(t) = m.poll_transmit(now) { send(t) }
//!     select { datagram(from, bytes) => m.handle_datagram(now, from, bytes),
//!              sleep_until(m.poll_timeout()) => m.handle_timeout(now) }
//!     if m.is_finished() { break }
//! }
//! ```

pub mod block;
pub mod client;
mod link;
pub mod netascii;
pub mod options;
pub mod packet;
mod recv;
mod send;
#[cfg(test)]
mod sim;

pub use block::Rollover;
pub use link::{GIVE_UP_FACTOR, Outcome, RetransmitPolicy, Stats, TransferError, Transmit};
pub use recv::{Receiver, RecvConfig};
pub use send::{SendConfig, Sender};
