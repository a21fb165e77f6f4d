//! Wyoming frames from a client: any bytes are events or an error, never a panic, and no
//! header makes the reader allocate more than its limits.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sotto::wyoming::protocol::read_all(data);
});
