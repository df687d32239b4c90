#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| listy_fuzz::decode_list::run(data));
