//! Like `parse_model`, but first rewrites the trailing CRC-32 so that it matches the
//! bytes before it. Random mutations almost never keep the checksum valid, so plain
//! `parse_model` mostly stops at the checksum check; this target reaches the header
//! decoding, the shape checks and the forward pass with mutated contents.
#![no_main]

#[path = "exercise.rs"]
mod exercise;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= 4 {
        let body = bytes.len() - 4;
        let crc = igpt_core::crc32(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    exercise::parse_and_run(&bytes);
});
