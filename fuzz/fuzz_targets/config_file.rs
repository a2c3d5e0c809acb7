//! Objects files (TOML and Exchange PowerShell) and node config: parse and
//! validate never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::objects::ObjectSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(set) = toml::from_str::<ObjectSet>(text) {
        let _ = set.validate();
    }
    if let Ok(set) = sluice::config::powershell::import(text) {
        let _ = set.validate();
    }
    let _ = toml::from_str::<sluice::config::NodeFile>(text);
});
