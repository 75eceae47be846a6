//! The integration suite: the real server on 127.0.0.1:0 against loopback upstream fakes.

mod batches;
mod browser;
mod cdp;
mod cli_batch;
mod helpers;
mod lookup;
mod streaming;
