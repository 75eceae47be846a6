//! The OpenPGP key parser: ASCII armour, then the packet framing (old and new lengths, partial
//! lengths), then the user IDs.
#![no_main]

use enrichd::sources::openpgp::{split_user_id, user_ids};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(ids) = user_ids(&text) {
        for id in ids {
            let _ = split_user_id(&id);
        }
    }
    let _ = split_user_id(&text);
});
