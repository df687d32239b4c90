#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| listy_fuzz::pgoutput::run(data));
