//! The integration suite: the real server on 127.0.0.1:0 against loopback upstream fakes, and the
//! real binary for what only a process can show (SIGKILL, startup refusals, the CLI).

mod abuse;
mod architecture;
mod batches;
mod binary;
mod bounds;
mod browser;
mod cdp;
mod cli;
mod cli_batch;
mod contract;
mod crash;
mod deploy;
mod durability;
mod expansion;
mod first_hour;
mod guards;
mod helpers;
mod hermetic;
mod invisible;
mod keys;
mod lookup;
mod optout;
mod optout_spellings;
mod paced;
mod purge;
mod replicas;
mod sources;
mod streaming;
mod trace;
