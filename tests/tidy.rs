//! Tidy tests, in the spirit of rust-analyzer's: the code base's shape,
//! checked like behaviour.
//!
//! - **Layering.** Every `crate::…` path in every file under `src/` (in `use`
//!   items and in expressions, `super::` chains that reach the crate root
//!   included) must be allowed by the dependency table in ARCHITECTURE.md —
//!   the one list, read from the document itself. A failure names the file,
//!   the line and the arrow. The table's "pending" column lists arrows that
//!   exist today but are scheduled to go; using one is allowed, and an entry
//!   that is no longer used fails (so the table tightens as the code does).
//! - **File size.** No source file under `src/` is over 600 lines, except
//!   files that are only tests (`tests.rs`, `*_tests.rs`) and the files the
//!   table's notes list as "over the limit, pending" (each of which must
//!   still be over it: a split file leaves the list).
//!
//! Run: `cargo test --test tidy`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
const BEGIN: &str = "<!-- dependency-table:begin -->";
const END: &str = "<!-- dependency-table:end -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One row of the table: what a module may import, and what it still does
/// but should not.
#[derive(Debug, Default)]
struct Rule {
    allowed: BTreeSet<String>,
    pending: BTreeSet<String>,
}

/// The dependency table: module → rule. Cells hold backticked names: a
/// module (`store`) allows every path under it, an item (`store::StoreError`)
/// allows that item only; `*` allows everything.
fn read_table() -> BTreeMap<String, Rule> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text.find(BEGIN).expect("dependency table start marker") + BEGIN.len();
    let end = text.find(END).expect("dependency table end marker");
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mut table = BTreeMap::new();
    for line in text[start..end].lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        if cells.len() < 2 || !cells[0].contains('`') {
            continue;
        }
        let module = names(cells[0])
            .into_iter()
            .next()
            .expect("a module name in the first cell");
        let rule = Rule {
            allowed: names(cells[1]),
            pending: cells.get(2).map(|c| names(c)).unwrap_or_default(),
        };
        assert!(
            table.insert(module.clone(), rule).is_none(),
            "module {module} has two rows"
        );
    }
    assert!(!table.is_empty(), "the dependency table has no rows");
    table
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/http/mod.rs` → `[http]`,
/// `src/http/content.rs` → `[http, content]`, `src/lib.rs` → `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text with comments and string/char literals blanked out (newlines
/// kept, so byte offsets still give line numbers).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    blank(&mut out, b[i]);
                    i += 1;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    blank(&mut out, b[i]);
                    i += 1;
                    if depth == 0 {
                        blank(&mut out, b[i]);
                        i += 1;
                        break;
                    }
                }
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'#' | b'"')) && !ident_byte(prev(b, i))
            || c == b'b' && b.get(i + 1) == Some(&b'r') && matches!(b.get(i + 2), Some(b'#' | b'"'))
        {
            // Raw string: r"…", r#"…"#, br#"…"#.
            let mut j = i + if c == b'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            let closing: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&closing) {
                j += 1;
            }
            j = (j + closing.len()).min(b.len());
            while i < j {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'"' {
            blank(&mut out, c);
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            if i < b.len() {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            // A char literal ('x', '\n', '\u{..}'); a lifetime is left alone.
            blank(&mut out, c);
            i += 1;
            if b.get(i) == Some(&b'\\') {
                // The escape and the escaped character ('\'' included).
                for _ in 0..2 {
                    if i < b.len() {
                        blank(&mut out, b[i]);
                        i += 1;
                    }
                }
            }
            while i < b.len() && b[i] != b'\'' {
                blank(&mut out, b[i]);
                i += 1;
            }
            if i < b.len() {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8 (only ASCII replaced)")
}

fn prev(b: &[u8], i: usize) -> u8 {
    if i == 0 {
        b' '
    } else {
        b[i - 1]
    }
}

fn ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// A tiny reader of paths and use-trees: `a::b::{c, d::{e, f}}` → every
/// full path (`a::b::c`, `a::b::d::e`, `a::b::d::f`).
struct Paths<'a> {
    b: &'a [u8],
    i: usize,
}

impl Paths<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn ident(&mut self) -> Option<String> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.b.len() && (ident_byte(self.b[self.i]) || self.b[self.i] == b'*') {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }
    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.b[self.i..].starts_with(s.as_bytes()) {
            self.i += s.len();
            true
        } else {
            false
        }
    }
    /// Paths of the tree starting here, each prefixed by `prefix`.
    fn tree(&mut self, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            if self.eat("{") {
                loop {
                    if self.eat("}") {
                        return;
                    }
                    self.tree(&path, out);
                    if !self.eat(",") {
                        self.eat("}");
                        return;
                    }
                }
            }
            match self.ident() {
                Some(seg) => path.push(seg),
                None => break,
            }
            if !self.eat("::") {
                break;
            }
        }
        if path.len() > prefix.len() {
            out.push(path);
        }
    }
}

/// Every path this file names in another top-level module, with its line:
/// `crate::x::…`, and `super::…` chains that climb to the crate root.
fn foreign_paths(src: &Path, file: &Path, modules: &BTreeSet<String>) -> Vec<(usize, Vec<String>)> {
    let text = code_only(&std::fs::read_to_string(file).unwrap());
    let b = text.as_bytes();
    let depth = module_path(src, file).len();
    let line_of = |i: usize| text[..i].bytes().filter(|&c| c == b'\n').count() + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at_word = !ident_byte(prev(b, i)) && prev(b, i) != b':';
        if at_word && b[i..].starts_with(b"crate::") {
            let mut p = Paths { b, i: i + 7 };
            let mut found = Vec::new();
            p.tree(&[], &mut found);
            for path in found {
                out.push((line_of(i), path));
            }
            i = p.i.max(i + 1);
        } else if at_word && depth > 0 && b[i..].starts_with(b"super::") {
            // Count the chain; only one that reaches the root leaves the module.
            let mut j = i;
            let mut supers = 0;
            while b[j..].starts_with(b"super::") {
                supers += 1;
                j += 7;
            }
            if supers == depth {
                let mut p = Paths { b, i: j };
                let mut found = Vec::new();
                p.tree(&[], &mut found);
                for path in found {
                    if modules.contains(&path[0]) {
                        out.push((line_of(i), path));
                    }
                }
                i = p.i.max(j);
            } else {
                i = j;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn allows(set: &BTreeSet<String>, path: &[String]) -> Option<String> {
    if set.contains("*") {
        return Some("*".into());
    }
    let module = &path[0];
    if set.contains(module) {
        return Some(module.clone());
    }
    let item = path.iter().take(2).cloned().collect::<Vec<_>>().join("::");
    set.contains(&item).then_some(item)
}

#[test]
fn imports_follow_the_dependency_table() {
    let table = read_table();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(&src, f).first().cloned())
        .collect();
    let mut problems = Vec::new();
    for m in &modules {
        if !table.contains_key(m) {
            problems.push(format!(
                "src/{m}: module has no row in the dependency table of ARCHITECTURE.md"
            ));
        }
    }
    let mut pending_used: BTreeSet<(String, String)> = BTreeSet::new();
    for file in &files {
        let Some(module) = module_path(&src, file).first().cloned() else {
            continue; // lib.rs and main.rs: the crate root declares, it does not depend
        };
        let Some(rule) = table.get(&module) else {
            continue;
        };
        let shown = file.strip_prefix(root()).unwrap().display().to_string();
        for (line, path) in foreign_paths(&src, file, &modules) {
            if path[0] == module || !modules.contains(&path[0]) {
                continue;
            }
            if allows(&rule.allowed, &path).is_some() {
                continue;
            }
            if let Some(entry) = allows(&rule.pending, &path) {
                pending_used.insert((module.clone(), entry));
                continue;
            }
            problems.push(format!(
                "{shown}:{line}: `{module}` may not import `{}` (crate::{}); see the dependency table in ARCHITECTURE.md",
                path[0],
                path.join("::")
            ));
        }
    }
    for (module, rule) in &table {
        for entry in &rule.pending {
            if modules.contains(module) && !pending_used.contains(&(module.clone(), entry.clone()))
            {
                problems.push(format!(
                    "ARCHITECTURE.md: `{module}` no longer imports `{entry}`: delete it from the pending column"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Files the table's notes allow over the limit for now (the line starting
/// with `Over the limit, pending:`), as paths relative to the crate.
fn oversize_pending() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text.find(BEGIN).expect("dependency table start marker");
    let end = text.find(END).expect("dependency table end marker");
    text[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Over the limit, pending:"))
        .flat_map(|l| l.split('`').skip(1).step_by(2).map(str::to_string))
        .collect()
}

#[test]
fn source_files_stay_under_the_line_limit() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let pending = oversize_pending();
    let mut long = Vec::new();
    for entry in &pending {
        let lines = std::fs::read_to_string(root().join(entry))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines <= MAX_LINES {
            long.push(format!(
                "ARCHITECTURE.md: {entry} is no longer over {MAX_LINES} lines: delete it from the pending list"
            ));
        }
    }
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue; // only tests
        }
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        if pending.contains(&rel) {
            continue;
        }
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        if lines > MAX_LINES {
            long.push(format!(
                "{}: {lines} lines (limit {MAX_LINES}; split it by concern)",
                file.strip_prefix(root()).unwrap().display()
            ));
        }
    }
    assert!(long.is_empty(), "\n{}\n", long.join("\n"));
}

#[test]
fn the_path_reader_sees_what_rustc_sees() {
    let src = Path::new("/x/src");
    let file = Path::new("/x/src/http/content.rs");
    assert_eq!(module_path(src, file), ["http", "content"]);
    assert_eq!(module_path(src, Path::new("/x/src/http/mod.rs")), ["http"]);
    let text = code_only(
        "use crate::a::{b, c::{d, e}};\n// crate::hidden\nlet s = \"crate::str\"; let c = '\"'; let q = '\\''; x(crate::f::g());\n",
    );
    let mut found = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(k) = text[i..].find("crate::") {
        let mut p = Paths { b, i: i + k + 7 };
        p.tree(&[], &mut found);
        i = p.i;
    }
    let joined: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c::d", "a::c::e", "f::g"]);
}
