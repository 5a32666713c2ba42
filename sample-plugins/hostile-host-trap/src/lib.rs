//! Hostile: hands the host a string that is not UTF-8 inside a host call (the tracing
//! service), breaking the canonical ABI's contract. The host must refuse the call with
//! a trap and end the execution as `InvalidHostCall`.

use sluice_sdk::{Context, Error, Output, Plugin};

struct HostTrap;

impl Plugin for HostTrap {
    fn execute(_: Context) -> Result<Output, Error> {
        let bytes = std::hint::black_box(vec![0x68, 0x69, 0xff, 0xfe]);
        // SAFETY: deliberately unsound: the point is to send the host invalid UTF-8.
        let broken = unsafe { std::str::from_utf8_unchecked(&bytes) };
        sluice_sdk::trace(broken);
        Ok(Output::new())
    }
}

sluice_sdk::export_plugin!(HostTrap);
