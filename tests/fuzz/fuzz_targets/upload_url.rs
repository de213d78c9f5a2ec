//! What an HTTP client controls in a XEP-0363 upload: the PUT URL's path and query string
//! (`Slot::verify`), the `Range` header of a download, and the file name of a slot request.
//! Nothing may panic; a query is accepted only with the signature of exactly what it says
//! (re-signing the accepted slot gives the same query back, for the same path); a range
//! always lies inside the file; a cleaned file name is a safe, non-empty path segment that
//! survives its URL encoding.
#![no_main]

use corvid::listen::upload::{resolve_range, Wanted};
use corvid::modules::upload::slot::{clean_filename, decode_segment, url_path};
use corvid::modules::upload::Slot;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzzing secret";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));

    // The PUT URL: the first line is the path, the rest the query.
    if let Ok(slot) = Slot::verify(first, rest, SECRET, 0) {
        assert_eq!(slot.path, first);
        assert!(Slot::verify(first, &slot.query(SECRET), SECRET, 0).is_ok());
        assert!(Slot::verify(first, rest, b"another secret", 0).is_err());
    }
    // A slot made from the input always verifies, and only under its own path.
    let made = Slot {
        path: first.to_owned(),
        owner: rest.to_owned(),
        size: data.len() as u64,
        content_type: text.to_string(),
        expires: 1,
    };
    assert_eq!(Slot::verify(first, &made.query(SECRET), SECRET, 0), Ok(made.clone()));
    assert!(Slot::verify(&format!("{first}x"), &made.query(SECRET), SECRET, 0).is_err());

    // The Range header, against files of a few sizes.
    for len in [0u64, 1, 16, data.len() as u64, u64::MAX] {
        if let Wanted::Part { start, end } = resolve_range(Some(&text), len) {
            assert!(start <= end && end < len, "{text:?} on {len}: {start}-{end}");
        }
    }

    // The file name of a slot request.
    let clean = clean_filename(&text);
    assert!(!clean.is_empty() && clean.len() <= 128);
    assert!(!clean.contains(['/', '\\']) && !clean.chars().any(char::is_control));
    assert!(!clean.starts_with('.'));
    let path = url_path(&format!("token/{clean}"));
    let segment = path.rsplit('/').next().unwrap_or_default();
    assert_eq!(decode_segment(segment).as_deref(), Some(clean.as_str()));
});
