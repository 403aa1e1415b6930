#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| procward_fuzz::control(data));
