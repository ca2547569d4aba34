#![no_main]
//! An OAM file (`tidalctl check FILE`): arbitrary bytes as text, invalid
//! UTF-8 replaced, through `traits::oam::check` against the built-in
//! catalogue.

use libfuzzer_sys::fuzz_target;
use tidal_fuzz::{catalogue, check_error};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match tidal::traits::oam::check(catalogue(), &text) {
        Ok((components, _traits)) => assert!(components > 0, "Ok without a component"),
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a reason");
            problems.iter().for_each(check_error);
        }
    }
});
