//! The integration suite: the real server on 127.0.0.1:0 against loopback upstream fakes.

mod helpers;
mod lookup;
mod optout;
mod optout_spellings;
mod streaming;
