//! Maps byte offsets in a TOML document to `line:col` and to key paths such as
//! `links[0].pools[1].end`, and back, using toml_edit's spans.

use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// 1-based line and column of byte offset `pos`.
pub(crate) fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = text.get(..pos).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Every key and value of the document with its span and path.
fn collect(text: &str) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    if let Ok(doc) = ImDocument::parse(text) {
        walk_table(doc.as_table(), "", &mut out);
    }
    out
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

fn walk_table(t: &Table, prefix: &str, out: &mut Vec<(Range<usize>, String)>) {
    if let Some(s) = t.span() {
        if !prefix.is_empty() {
            out.push((s, prefix.to_string()));
        }
    }
    for (k, item) in t.iter() {
        let path = join(prefix, k);
        if let Some(s) = t.key(k).and_then(|key| key.span()) {
            out.push((s, path.clone()));
        }
        walk_item(item, &path, out);
    }
}

fn walk_item(item: &Item, path: &str, out: &mut Vec<(Range<usize>, String)>) {
    match item {
        Item::Table(t) => walk_table(t, path, out),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                walk_table(t, &format!("{path}[{i}]"), out);
            }
        }
        Item::Value(v) => walk_value(v, path, out),
        Item::None => {}
    }
}

fn walk_value(v: &Value, path: &str, out: &mut Vec<(Range<usize>, String)>) {
    if let Some(s) = v.span() {
        out.push((s, path.to_string()));
    }
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk_value(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::InlineTable(t) => {
            for (k, x) in t.iter() {
                let p = join(path, k);
                if let Some(s) = t.key(k).and_then(|key| key.span()) {
                    out.push((s, p.clone()));
                }
                walk_value(x, &p, out);
            }
        }
        _ => {}
    }
}

/// The key path at byte offset `pos`: the narrowest span containing it, else the nearest
/// span starting before it.
pub(crate) fn key_at(text: &str, pos: usize) -> Option<String> {
    let all = collect(text);
    let inside = all
        .iter()
        .filter(|(s, _)| s.start <= pos && pos < s.end.max(s.start + 1))
        .min_by_key(|(s, _)| s.end - s.start);
    if let Some((_, p)) = inside {
        return Some(p.clone());
    }
    all.iter()
        .filter(|(s, _)| s.start <= pos)
        .max_by_key(|(s, _)| s.start)
        .map(|(_, p)| p.clone())
}

/// Byte offset of `path` (or of its longest existing ancestor).
pub(crate) fn find_key(text: &str, path: &str) -> Option<usize> {
    let all = collect(text);
    let mut p = path.to_string();
    loop {
        if let Some((s, _)) = all
            .iter()
            .filter(|(_, q)| *q == p)
            .min_by_key(|(s, _)| s.start)
        {
            return Some(s.start);
        }
        let cut = p.rfind(['.', '['])?;
        p.truncate(cut);
    }
}
