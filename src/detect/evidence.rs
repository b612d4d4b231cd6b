//! Evidence fields that say how exact they are.
//!
//! A number an analyst reads is either exact or marked as an estimate:
//! every estimated field is listed under `evidence.estimated` with its
//! relative error (95 %), or as a lower bound when its sketch is full.

use serde_json::{Map, Value, json};

use crate::base::sketch::Count;

/// Bytes for a sentence: "12.3 MB".
pub fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

/// Puts a distinct count under `key`, and marks it in `estimated` unless exact.
pub fn put_count(ev: &mut Map<String, Value>, key: &str, c: Count) {
    ev.insert(key.into(), json!(c.value));
    if !c.exact {
        let note =
            if c.saturated { json!({"lower_bound": true}) } else { json!({"relative_error": c.error}) };
        if let Some(est) = ev.entry("estimated").or_insert_with(|| json!({})).as_object_mut() {
            est.insert(key.into(), note);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_marked_exact_counts_are_not() {
        let mut ev = Map::new();
        put_count(&mut ev, "ports", Count { value: 12, exact: true, error: 0.0, saturated: false });
        assert!(ev.get("estimated").is_none());
        put_count(&mut ev, "hosts", Count { value: 300, exact: false, error: 0.04, saturated: false });
        put_count(&mut ev, "sources", Count { value: 3540, exact: false, error: 0.0, saturated: true });
        assert_eq!(ev["estimated"]["hosts"]["relative_error"], 0.04);
        assert_eq!(ev["estimated"]["sources"]["lower_bound"], true);
        assert_eq!(ev["ports"], 12);
    }
}
