#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| standby::fuzzing::availability(data));
