//! Fuzzes `igpt_core::Model::parse` on arbitrary bytes. When a file parses, the forward
//! entry points (`classify`, and `logits` for full models) run on a fixed all-zero image
//! so the parsed views are exercised too. Errors are fine; any panic is a bug.
#![no_main]

#[path = "exercise.rs"]
mod exercise;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| exercise::parse_and_run(data));
