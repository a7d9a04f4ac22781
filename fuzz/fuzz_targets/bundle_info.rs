//! Parse arbitrary bytes as an AP image `info` file: it never fails or panics, and every
//! field it keeps has a non-empty, trimmed key and a trimmed value.
#![no_main]

use bundle_tool::info::parse_info;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let info = parse_info(data);
    for (key, value) in &info.fields {
        assert!(!key.is_empty());
        assert_eq!(key.trim(), key);
        assert_eq!(value.trim(), value);
    }
    if let Some(family) = &info.image_family {
        assert!(!family.is_empty());
    }
});
