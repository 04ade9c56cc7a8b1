//! Decodes arbitrary bytes as the wire structures that do not travel inside
//! an MLSMessage: the ratchet tree, GroupSecrets, and PrivateMessageContent
//! (selected by the first byte). Whatever decodes must round-trip.
#![no_main]

use hsmls::internal::codec::{GroupSecrets, PrivateMessageContent};
use hsmls::wire::{ContentType, Decode, Encode, GroupContext, RatchetTree};
use libfuzzer_sys::fuzz_target;

fn round_trip<T: Decode + Encode>(data: &[u8]) {
    if let Ok(v) = T::decode(data) {
        assert_eq!(v.encode().expect("re-encodes"), data);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => round_trip::<RatchetTree>(rest),
        1 => round_trip::<GroupSecrets>(rest),
        2 => round_trip::<GroupContext>(rest),
        n => {
            let ct = match n {
                3 => ContentType::Application,
                4 => ContentType::Proposal,
                _ => ContentType::Commit,
            };
            if let Ok(v) = PrivateMessageContent::decode(ct, rest) {
                assert_eq!(v.encode().expect("re-encodes"), rest);
            }
        }
    }
});
