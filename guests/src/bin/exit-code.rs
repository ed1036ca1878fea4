//! Exits with the code given as `code=N` on the command line (7 by default; negative codes
//! allowed). A malformed code prints why and exits with 2.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{args, gprintln, guest_main, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    let code = match guest.arg("code") {
        None => 7,
        Some(v) => match args::parse_i64(v).and_then(|c| i32::try_from(c).ok()) {
            Some(c) => c,
            None => {
                gprintln!(guest, "exit-code: malformed code `{v}`");
                return 2;
            }
        },
    };
    gprintln!(guest, "exit-code: exiting with {code}");
    code
}
