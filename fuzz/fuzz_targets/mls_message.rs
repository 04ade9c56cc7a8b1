//! Decodes arbitrary bytes as an MLSMessage (RFC 9420 §6); whatever decodes
//! must re-encode to the identical bytes (the encoding is canonical).
#![no_main]

use hsmls::internal::codec::MlsMessage;
use hsmls::wire::{Decode, Encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = MlsMessage::decode(data) {
        let again = message.encode().expect("a decoded message re-encodes");
        assert_eq!(again, data, "decode/encode round trip");
    }
});
