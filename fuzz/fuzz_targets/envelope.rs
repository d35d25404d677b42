//! The envelope parser and the JSON scanner behind it: never panic, and accept exactly what
//! serde_json accepts (apart from the two things the scanner refuses on purpose at the top level:
//! duplicate routing fields and undecodable key escapes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpvisor::protocol::{json_scan, jsonrpc};

fuzz_target!(|data: &[u8]| {
    let _ = jsonrpc::parse(data);
    let _ = jsonrpc::sniff_id(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let serde_ok = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
        match json_scan::scan(text) {
            Ok(_) => assert!(serde_ok, "scanner accepted what serde_json refuses"),
            Err(e) if e.what == "duplicate field" || e.what == "invalid escape in key" => {}
            Err(e) if e.what == "nesting too deep" => {}
            Err(_) => assert!(!serde_ok, "scanner refused what serde_json accepts"),
        }
    }
});
