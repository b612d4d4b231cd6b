//! The rooms of `src/` import only downward: base ← decode ← track ←
//! detect ← pipeline, with config beside base. A circle would let a new
//! detector family spread over two rooms again.

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

fn sources(room: &str) -> Vec<PathBuf> {
    common::files_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(room), &["rs"])
}

#[test]
fn rooms_import_only_downward() {
    let forbidden: [(&str, &[&str]); 5] = [
        (
            "base",
            &[
                "crate::capture",
                "crate::decode",
                "crate::track",
                "crate::detect",
                "crate::config",
                "crate::export",
                "crate::pipeline",
            ],
        ),
        (
            "decode",
            &[
                "crate::capture",
                "crate::track",
                "crate::detect",
                "crate::config",
                "crate::export",
                "crate::pipeline",
            ],
        ),
        ("capture", &["crate::track", "crate::detect", "crate::export", "crate::pipeline"]),
        ("track", &["crate::detect", "crate::export", "crate::pipeline"]),
        (
            "config",
            &[
                "crate::capture",
                "crate::decode",
                "crate::track",
                "crate::detect",
                "crate::export",
                "crate::pipeline",
            ],
        ),
    ];
    let mut bad = Vec::new();
    for (room, banned) in forbidden {
        for file in sources(room) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if let Some(b) = banned.iter().find(|b| line.contains(*b)) {
                    bad.push(format!("{}:{}: {b}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "imports that go up a room:\n{}", bad.join("\n"));
}
