//! The Markdown of `README.md` and `docs/`, for the tests that check the docs against the
//! code: `services/sagaflow/tests/docs.rs` (no cluster) and `operator/tests` (the API server and
//! the operator's binary). Included by path in both.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `README.md` and every page under `docs/` (runbooks included) of the repository at `root`.
pub fn pages(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("docs/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug)]
pub struct Block {
    pub line: usize,
    pub info: String,
    pub code: String,
    /// Why it is not run here, from `<!-- not run: … -->` on the line before.
    pub not_run: Option<String>,
}

/// The fenced code blocks of a page.
pub fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if let Some(info) = lines[i].strip_prefix("```") {
            let start = i;
            let mut code = String::new();
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                code.push_str(lines[i]);
                code.push('\n');
                i += 1;
            }
            let not_run = lines[..start]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.trim().strip_prefix("<!-- not run:"))
                .map(|r| r.trim_end_matches("-->").trim().to_owned());
            out.push(Block {
                line: start + 1,
                info: info.trim().to_owned(),
                code,
                not_run,
            });
        }
        i += 1;
    }
    out
}

/// Compares the generated page at `path` with `text`, or writes it when `UPDATE_DOCS=1`;
/// `again` is the command that writes it.
pub fn generated(path: &Path, text: &str, again: &str) {
    if std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(path, text).expect("writing the generated page");
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed != text {
        let line = committed
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "its length".to_owned(), |n| format!("line {}", n + 1));
        panic!(
            "{} differs from the code at {line}: run `{again}` and commit it",
            path.display()
        );
    }
}
