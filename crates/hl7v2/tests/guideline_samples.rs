//! Every valid guideline sample decodes and parses, and agrees with the hl7-parser crate on
//! structure (a differential check of our splitter against an independent implementation).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use tsunagi_hl7v2::{Message, charset};

fn samples_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/ssmix2-guideline-samples/sampleData/999")
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn valid_samples_parse_and_agree_with_hl7_parser() {
    let paths = files(&samples_root());
    assert_eq!(paths.len(), 19, "the guideline's 19 valid sample files");
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let (text, detected) = charset::decode(&bytes).unwrap();
        assert_eq!(detected, charset::Detected::Iso2022Jp, "{}", path.display());
        let ours = Message::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ours.message_type().unwrap();
        // hl7-parser wants clean segment separators and no trailing 0x1C.
        let cleaned = text.trim_end_matches(['\u{1c}', '\r', '\n']);
        let theirs = hl7_parser::Message::parse_with_lenient_newlines(cleaned, true)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let their_segments: Vec<_> = theirs.segments().collect();
        assert_eq!(
            ours.segments().len(),
            their_segments.len(),
            "{}",
            path.display()
        );
        for (mine, other) in ours.segments().iter().zip(their_segments) {
            assert_eq!(mine.id(), other.name);
            if mine.id() == "MSH" {
                continue;
            }
            assert_eq!(
                mine.field_count(),
                other.fields.len(),
                "{} {}",
                path.display(),
                mine.id()
            );
            for (n, field) in other.fields.iter().enumerate() {
                assert_eq!(
                    mine.field(n + 1).raw(),
                    field.raw_value(),
                    "{} {}-{}",
                    path.display(),
                    mine.id(),
                    n + 1
                );
            }
        }
    }
}
