//! The server crate's module import graph, checked from its sources: no loop
//! anywhere, and the lower layers (`store`, `model`) import nothing above
//! them (docs/architecture.md).
//!
//! Each file under `src/` is a module (`auth/sessions.rs` is
//! `auth::sessions`, `auth/mod.rs` is `auth`, `lib.rs` the crate root). Its
//! edges are its `use` declarations (`pub use` included; a relative path
//! starting with a child module's name counts) and the `crate::`, `super::`
//! and `self::` paths in its code, each resolved to the longest prefix that
//! is a module of the crate. A small lexer skips comments and literals, so a
//! path in a doc comment or a message is no edge. Items under `#[cfg(test)]`
//! (the attribute and the one item it marks) are left out: tests may import
//! freely.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Modules that nothing under `store` may import: storage sits below the
/// domain and the HTTP layer, and is handed to them, never the other way.
const ABOVE_STORE: [&str; 4] = ["auth", "http", "app", "cli"];

/// The top of the crate's own types: it imports no other module of the crate.
const MODEL: &str = "model";

#[test]
fn the_crate_import_graph_has_no_loop() {
    let graph = crate_graph();

    let loops = graph.loops();

    assert!(loops.is_empty(), "{}", loop_report(&graph, &loops));
}

#[test]
fn store_and_model_import_nothing_above_them() {
    let graph = crate_graph();

    let violations = layering_violations(&graph);

    assert!(
        violations.is_empty(),
        "layering rule broken (docs/architecture.md): nothing under `store` imports \
         {}; `{MODEL}` imports only `{MODEL}::*`.\n\n{}\n\nMove the piece both sides \
         need down (into `{MODEL}` or `store`) and import it from there.",
        ABOVE_STORE.map(|m| format!("`{m}`")).join(", "),
        violations.join("\n"),
    );
}

#[test]
fn the_analyzer_sees_the_whole_crate() {
    // Guards the two tests above against passing on an empty graph.
    let graph = crate_graph();

    for module in ["crate", "auth", "auth::sessions", "http", "model", "store"] {
        assert!(
            graph.files.contains_key(&Module::parse(module)),
            "`{module}` not found under src/; found {:?}",
            graph
                .files
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        );
    }
    assert!(graph.edges.values().map(BTreeMap::len).sum::<usize>() > graph.files.len());
}

/// The graph of `crates/gatehouse/src`.
fn crate_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let sources = paths
        .iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).expect("a file under src/");
            let module = module_of(relative)?;
            let text = fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            Some((module, relative.display().to_string(), text))
        })
        .collect();
    Graph::build(sources)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The module a file under `src/` defines: `lib.rs` is the crate root,
/// `a/mod.rs` is `a`, `a/b.rs` is `a::b`. `main.rs` and `bin/` are other
/// crates (binaries that use this one), so they have none.
fn module_of(relative: &Path) -> Option<Module> {
    let mut segments: Vec<String> = relative
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_string_lossy().into_owned(),
            other => panic!("unexpected path component {other:?} in {relative:?}"),
        })
        .collect();
    let file = segments.pop()?;
    let stem = file.strip_suffix(".rs")?;
    match (segments.first().map(String::as_str), stem) {
        (Some("bin"), _) | (None, "main") => return None,
        (None, "lib") => {}
        (_, "mod") => {}
        _ => segments.push(stem.to_owned()),
    }
    Some(Module(segments))
}

/// A module path inside the crate; empty for the crate root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Module(Vec<String>);

impl Module {
    /// `"crate"` is the root, `"a::b"` is `a::b`.
    fn parse(path: &str) -> Self {
        if path == "crate" {
            return Self(Vec::new());
        }
        Self(path.split("::").map(str::to_owned).collect())
    }

    /// Whether this is `top` or a module under it.
    fn is_within(&self, top: &str) -> bool {
        self.0.first().is_some_and(|first| first == top)
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("crate")
        } else {
            f.write_str(&self.0.join("::"))
        }
    }
}

/// Where an edge was first seen, for the failure message.
#[derive(Debug, Clone)]
struct Site {
    line: usize,
    path: String,
}

#[derive(Debug, Default)]
struct Graph {
    /// Each module's file, relative to `src/`.
    files: BTreeMap<Module, String>,
    /// Each module's edges: the modules it imports, and where it first does.
    edges: BTreeMap<Module, BTreeMap<Module, Site>>,
}

impl Graph {
    /// The graph of a crate given as (module, file name, source text).
    fn build(sources: Vec<(Module, String, String)>) -> Self {
        let modules: BTreeSet<Module> = sources.iter().map(|(m, _, _)| m.clone()).collect();
        let mut graph = Self::default();
        for (module, file, text) in sources {
            let tokens = without_test_items(lex(&text));
            let edges = references(&tokens, &module, &modules);
            graph.edges.insert(module.clone(), edges);
            graph.files.insert(module, file);
        }
        graph
    }

    fn targets(&self, module: &Module) -> impl Iterator<Item = (&Module, &Site)> {
        self.edges.get(module).into_iter().flatten()
    }

    /// The strongly connected components of more than one module (Tarjan),
    /// each sorted, in module order.
    fn loops(&self) -> Vec<Vec<Module>> {
        let mut tarjan = Tarjan {
            graph: self,
            next_index: 0,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            loops: Vec::new(),
        };
        for module in self.files.keys() {
            if !tarjan.index.contains_key(module) {
                tarjan.visit(module);
            }
        }
        let mut loops = tarjan.loops;
        loops.iter_mut().for_each(|l| l.sort());
        loops.sort();
        loops
    }
}

struct Tarjan<'g> {
    graph: &'g Graph,
    next_index: usize,
    index: BTreeMap<&'g Module, usize>,
    low: BTreeMap<&'g Module, usize>,
    stack: Vec<&'g Module>,
    on_stack: BTreeSet<&'g Module>,
    loops: Vec<Vec<Module>>,
}

impl<'g> Tarjan<'g> {
    fn visit(&mut self, v: &'g Module) {
        self.index.insert(v, self.next_index);
        self.low.insert(v, self.next_index);
        self.next_index += 1;
        self.stack.push(v);
        self.on_stack.insert(v);

        let graph = self.graph;
        for (w, _) in graph.targets(v) {
            if !self.index.contains_key(w) {
                self.visit(w);
                let low = self.low[v].min(self.low[w]);
                self.low.insert(v, low);
            } else if self.on_stack.contains(w) {
                let low = self.low[v].min(self.index[w]);
                self.low.insert(v, low);
            }
        }

        if self.low[v] == self.index[v] {
            let mut component = Vec::new();
            loop {
                let w = self.stack.pop().expect("v is on the stack");
                self.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            // A module's references to itself are no edges, so a component
            // of one is never a loop.
            if component.len() > 1 {
                self.loops.push(component);
            }
        }
    }
}

fn loop_report(graph: &Graph, loops: &[Vec<Module>]) -> String {
    let mut report = format!(
        "the module import graph of crates/gatehouse/src has {} loop(s); \
         the architecture allows none:\n",
        loops.len()
    );
    for (n, members) in loops.iter().enumerate() {
        let names: Vec<String> = members.iter().map(ToString::to_string).collect();
        report += &format!("\nloop {}: {}\n", n + 1, names.join(", "));
        for from in members {
            for (to, site) in graph.targets(from).filter(|(to, _)| members.contains(to)) {
                report += &format!(
                    "    {from} -> {to}    ({}:{}: `{}`)\n",
                    graph.files[from], site.line, site.path
                );
            }
        }
    }
    report += "\nTo break a loop: import each item from the module that defines it, not \
               through a parent's re-export or a `use super::*` that reaches back into \
               the parent (which glob-imports its children); and when two modules need \
               the same piece, move that piece down into a module both import (a child \
               of their own, `model`, or `store`), so every edge points one way.";
    report
}

fn layering_violations(graph: &Graph) -> Vec<String> {
    let mut violations = Vec::new();
    for (from, file) in &graph.files {
        for (to, site) in graph.targets(from) {
            let broken = if from.is_within("store") {
                ABOVE_STORE.iter().any(|above| to.is_within(above))
            } else if from.is_within(MODEL) {
                !to.is_within(MODEL)
            } else {
                false
            };
            if broken {
                violations.push(format!(
                    "    {from} -> {to}    ({file}:{}: `{}`)",
                    site.line, site.path
                ));
            }
        }
    }
    violations
}

// ---- The lexer: only what an import graph needs --------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

impl Token {
    fn is(&self, text: &str) -> bool {
        match &self.tok {
            Tok::Ident(word) => word == text,
            Tok::PathSep => text == "::",
            Tok::Punct(c) => text.chars().eq(std::iter::once(*c)),
        }
    }

    fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(word) => Some(word),
            _ => None,
        }
    }
}

/// Identifiers, `::` and single punctuation characters; comments, string,
/// char and number literals and lifetimes produce nothing.
fn lex(src: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        chars: src.chars().collect(),
        pos: 0,
        line: 1,
    };
    let mut tokens = Vec::new();
    while let Some(c) = lexer.peek(0) {
        let line = lexer.line;
        let mut push = |tok| tokens.push(Token { tok, line });
        match c {
            '/' if lexer.peek(1) == Some('/') => lexer.skip_line(),
            '/' if lexer.peek(1) == Some('*') => lexer.skip_block_comment(),
            '"' => {
                lexer.bump();
                lexer.skip_string();
            }
            '\'' => lexer.skip_char_or_lifetime(),
            ':' if lexer.peek(1) == Some(':') => {
                lexer.pos += 2;
                push(Tok::PathSep);
            }
            c if c.is_alphabetic() || c == '_' => {
                let word = lexer.word();
                match (word.as_str(), lexer.peek(0)) {
                    ("r" | "br" | "cr", Some('"' | '#')) => {
                        if let Some(raw_ident) = lexer.skip_raw_string() {
                            push(Tok::Ident(raw_ident));
                        }
                    }
                    ("b" | "c", Some('"')) => {
                        lexer.bump();
                        lexer.skip_string();
                    }
                    ("b", Some('\'')) => lexer.skip_char_or_lifetime(),
                    _ => push(Tok::Ident(word)),
                }
            }
            c if c.is_ascii_digit() => {
                lexer.word();
            }
            c if c.is_whitespace() => lexer.bump(),
            c => {
                lexer.bump();
                push(Tok::Punct(c));
            }
        }
    }
    tokens
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) {
        if self.peek(0) == Some('\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    /// An identifier, keyword or number: letters, digits and `_`.
    fn word(&mut self) -> String {
        let start = self.pos;
        while self
            .peek(0)
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn skip_line(&mut self) {
        while self.peek(0).is_some_and(|c| c != '\n') {
            self.pos += 1;
        }
    }

    /// Block comments nest in Rust.
    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek(0) {
            if c == '/' && self.peek(1) == Some('*') {
                depth += 1;
                self.pos += 2;
            } else if c == '*' && self.peek(1) == Some('/') {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// From just after the opening `"` to just after the closing one.
    fn skip_string(&mut self) {
        while let Some(c) = self.peek(0) {
            self.bump();
            match c {
                '\\' => self.bump(),
                '"' => return,
                _ => {}
            }
        }
    }

    /// After an `r`, `br` or `cr`: a raw string `r#"..."#` (skipped), or a
    /// raw identifier `r#name` (returned without its `r#`).
    fn skip_raw_string(&mut self) -> Option<String> {
        let hashes = (0..).take_while(|&n| self.peek(n) == Some('#')).count();
        if self.peek(hashes) != Some('"') {
            if hashes == 1 {
                self.pos += 1;
                return Some(self.word());
            }
            return None;
        }
        self.pos += hashes + 1;
        while self.peek(0).is_some() {
            if self.peek(0) == Some('"') && (1..=hashes).all(|n| self.peek(n) == Some('#')) {
                self.pos += hashes + 1;
                return None;
            }
            self.bump();
        }
        None
    }

    /// At a `'`: a char literal (`'x'`, `'\n'`, `'"'`) or a lifetime or
    /// label (`'a`, `'static`).
    fn skip_char_or_lifetime(&mut self) {
        self.pos += 1;
        if self.peek(0) == Some('\\') {
            self.pos += 2;
            while self.peek(0).is_some_and(|c| c != '\'') {
                self.pos += 1;
            }
            self.pos += 1;
        } else if self.peek(1) == Some('\'') {
            self.pos += 2;
        } else {
            self.word();
        }
    }
}

/// The tokens without the items under `#[cfg(test)]`: test modules, test
/// helpers and test-only imports.
fn without_test_items(tokens: Vec<Token>) -> Vec<Token> {
    const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut kept = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let is_cfg_test = tokens.len() - i >= CFG_TEST.len()
            && CFG_TEST.iter().zip(&tokens[i..]).all(|(p, t)| t.is(p));
        if is_cfg_test {
            i = item_end(&tokens, i + CFG_TEST.len());
        } else {
            kept.push(tokens[i].clone());
            i += 1;
        }
    }
    kept
}

/// Where the item starting at `start` (after an attribute) ends: after its
/// `;` or its closing `}`, or before the `}` of the block it closes.
fn item_end(tokens: &[Token], start: usize) -> usize {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(start) {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(close @ (')' | ']' | '}')) => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 && close == '}' {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
    }
    tokens.len()
}

// ---- Paths and their resolution -------------------------------------------

/// The modules that the code of `module` refers to (itself excluded), each
/// with the first place it does.
fn references(
    tokens: &[Token],
    module: &Module,
    modules: &BTreeSet<Module>,
) -> BTreeMap<Module, Site> {
    let mut edges = BTreeMap::new();
    // One entry per open `{`: the inline module it opens, if any.
    let mut blocks: Vec<Option<String>> = Vec::new();
    let mut inline_module = None;
    let mut i = 0;
    while let Some(token) = tokens.get(i) {
        let next = tokens.get(i + 1);
        // The module that paths here are relative to: the file's module and
        // the inline modules around this point.
        let scope: Vec<String> = module
            .0
            .iter()
            .chain(blocks.iter().flatten())
            .cloned()
            .collect();
        let mut found = Vec::new();
        match &token.tok {
            Tok::Punct('{') => {
                blocks.push(inline_module.take());
                i += 1;
            }
            Tok::Punct('}') => {
                blocks.pop();
                i += 1;
            }
            Tok::Ident(word) if word == "mod" => {
                if let (Some(name), Some(open)) = (next.and_then(Token::ident), tokens.get(i + 2))
                    && open.is("{")
                {
                    inline_module = Some(name.to_owned());
                }
                i += 1;
            }
            // `use<'a>` is precise capturing in an `impl Trait`, no import.
            Tok::Ident(word) if word == "use" && !next.is_some_and(|t| t.is("<")) => {
                let end = (i..tokens.len())
                    .find(|&j| tokens[j].is(";"))
                    .unwrap_or(tokens.len());
                found = use_paths(&tokens[i + 1..end]);
                i = end + 1;
            }
            // `pub(in crate::a)` restricts visibility; it imports nothing.
            Tok::Ident(word) if word == "pub" && next.is_some_and(|t| t.is("(")) => {
                i = (i..tokens.len())
                    .find(|&j| tokens[j].is(")"))
                    .map_or(tokens.len(), |j| j + 1);
            }
            Tok::Ident(first)
                if next.is_some_and(|t| t.is("::"))
                    && !(i > 0 && tokens[i - 1].is("::"))
                    && is_anchored(first) =>
            {
                let mut path = vec![first.clone()];
                i += 1;
                while let (Some(sep), Some(Tok::Ident(segment))) =
                    (tokens.get(i), tokens.get(i + 1).map(|t| &t.tok))
                    && sep.is("::")
                {
                    path.push(segment.clone());
                    i += 2;
                }
                found.push(path);
            }
            _ => i += 1,
        }
        for path in found {
            if let Some(target) = resolve(&scope, &path, modules)
                && target != *module
            {
                edges.entry(target).or_insert_with(|| Site {
                    line: token.line,
                    path: path.join("::"),
                });
            }
        }
    }
    edges
}

/// Whether a path in code (not in a `use`) whose first segment is `first`
/// is an edge: only anchored ones (`crate::`, `super::`, `self::`). A bare
/// `child::f()` is the parent calling into a module it declares, which is
/// the module tree itself, not an import; `use child::*` still is one.
fn is_anchored(first: &str) -> bool {
    matches!(first, "crate" | "self" | "super")
}

fn child(scope: &[String], name: &str) -> Module {
    Module(scope.iter().cloned().chain([name.to_owned()]).collect())
}

/// The paths a `use` tree names, braces expanded: `a::{b, c::{d, self}}` is
/// `a::b`, `a::c::d` and `a::c`. A glob ends in `*`; renames are dropped; a
/// leading `::` (another crate, by the 2018 rules) names nothing.
fn use_paths(tree: &[Token]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    if !tree.first().is_some_and(|t| t.is("::")) {
        use_tree(tree, &mut 0, &[], &mut paths);
    }
    paths
}

fn use_tree(tree: &[Token], pos: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    while let Some(token) = tree.get(*pos) {
        *pos += 1;
        match &token.tok {
            Tok::Ident(word) if word == "as" => {
                *pos += 1;
                break;
            }
            // `a::{self, b}`: `self` is `a` itself.
            Tok::Ident(word) if word == "self" && !path.is_empty() => {}
            Tok::Ident(segment) => path.push(segment.clone()),
            Tok::PathSep => {}
            Tok::Punct('*') => {
                path.push("*".to_owned());
                break;
            }
            Tok::Punct('{') => {
                while let Some(inner) = tree.get(*pos) {
                    if inner.is("}") {
                        *pos += 1;
                        break;
                    }
                    let before = *pos;
                    if !inner.is(",") {
                        use_tree(tree, pos, &path, out);
                    }
                    // A `,`, or a token no tree starts with: step over it.
                    if *pos == before {
                        *pos += 1;
                    }
                }
                return;
            }
            // `,` or `}`: the end of this branch, left for the caller.
            _ => {
                *pos -= 1;
                break;
            }
        }
    }
    out.push(path);
}

/// The module of the crate a path from `scope` lands in: the longest prefix
/// of the absolute path that is a module (`crate::auth::accounts::LoginError`
/// is `auth::accounts`; `super::Item` from `auth::sessions` is `auth`).
fn resolve(scope: &[String], path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let (first, rest) = path.split_first()?;
    let absolute: Vec<String> = match first.as_str() {
        "crate" => rest.to_vec(),
        "self" => scope.iter().chain(rest).cloned().collect(),
        "super" => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            let base = scope.get(..scope.len().checked_sub(supers)?)?;
            base.iter().chain(&path[supers..]).cloned().collect()
        }
        name if modules.contains(&child(scope, name)) => {
            scope.iter().chain(path).cloned().collect()
        }
        _ => return None,
    };
    (0..=absolute.len())
        .rev()
        .map(|len| Module(absolute[..len].to_vec()))
        .find(|candidate| modules.contains(candidate))
}

// ---- The analyzer's own tests ---------------------------------------------

mod analyzer {
    use super::*;

    /// The graph of a crate given as (file under `src/`, source).
    fn graph_of(files: &[(&str, &str)]) -> Graph {
        Graph::build(
            files
                .iter()
                .map(|(file, text)| {
                    let module = module_of(Path::new(file)).expect("a library file");
                    (module, (*file).to_owned(), (*text).to_owned())
                })
                .collect(),
        )
    }

    fn edges_of(graph: &Graph, module: &str) -> Vec<String> {
        graph
            .targets(&Module::parse(module))
            .map(|(to, _)| to.to_string())
            .collect()
    }

    fn modules(names: &[&str]) -> Vec<Module> {
        names.iter().map(|m| Module::parse(m)).collect()
    }

    #[test]
    fn files_map_to_their_modules() {
        let cases = [
            ("lib.rs", Some("crate")),
            ("auth/mod.rs", Some("auth")),
            ("auth/sessions.rs", Some("auth::sessions")),
            ("store/sql/users.rs", Some("store::sql::users")),
            ("main.rs", None),
            ("bin/tool.rs", None),
        ];
        for (file, module) in cases {
            assert_eq!(
                module_of(Path::new(file)),
                module.map(Module::parse),
                "{file}"
            );
        }
    }

    #[test]
    fn a_two_module_loop_is_found_with_its_edges() {
        let graph = graph_of(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            ("b.rs", "use crate::c;\npub struct B(crate::a::A);\n"),
            ("c.rs", "pub struct C;\n"),
        ]);

        let loops = graph.loops();

        assert_eq!(loops, vec![modules(&["a", "b"])]);
        let report = loop_report(&graph, &loops);
        assert!(
            report.contains("a -> b    (a.rs:1: `crate::b::B`)"),
            "{report}"
        );
        assert!(
            report.contains("b -> a    (b.rs:2: `crate::a::A`)"),
            "{report}"
        );
        assert!(!report.contains("-> c"), "{report}");
    }

    #[test]
    fn a_parent_glob_importing_children_that_use_super_glob_is_a_loop() {
        let graph = graph_of(&[
            (
                "pages/mod.rs",
                "mod login;\nuse login::*;\npub struct Shared;\n",
            ),
            (
                "pages/login.rs",
                "use super::*;\npub fn login(_: Shared) {}\n",
            ),
        ]);

        assert_eq!(graph.loops(), vec![modules(&["pages", "pages::login"])]);
    }

    #[test]
    fn a_parent_calling_into_the_children_it_declares_is_no_edge() {
        let graph = graph_of(&[
            (
                "http/mod.rs",
                "mod login;\npub struct AppState;\npub fn router() { login::router(); }\n",
            ),
            (
                "http/login.rs",
                "use super::AppState;\npub fn router() {}\n",
            ),
        ]);

        assert!(edges_of(&graph, "http").is_empty());
        assert!(graph.loops().is_empty());
    }

    #[test]
    fn a_dag_has_no_loop() {
        let graph = graph_of(&[
            (
                "lib.rs",
                "pub mod a;\npub mod b;\npub mod c;\npub use a::A;\n",
            ),
            ("a.rs", "use crate::{b::B, c::C};\npub struct A(B, C);\n"),
            ("b.rs", "use super::c::C;\npub struct B(C);\n"),
            ("c.rs", "pub struct C;\n"),
        ]);

        assert_eq!(edges_of(&graph, "crate"), ["a"]);
        assert_eq!(edges_of(&graph, "a"), ["b", "c"]);
        assert!(graph.loops().is_empty());
    }

    #[test]
    fn nested_braces_resolve_to_the_longest_module_prefix() {
        let graph = graph_of(&[
            ("lib.rs", ""),
            ("auth/mod.rs", ""),
            ("auth/accounts.rs", ""),
            ("store/mod.rs", ""),
            ("store/sql/mod.rs", ""),
            ("http/mod.rs", ""),
            (
                "http/pages.rs",
                "pub use crate::{\n    auth::{self, accounts::{LoginError, Registrar as R}},\n    \
                 store::sql::{Pool},\n};\nuse std::{collections::HashMap, fmt};\n",
            ),
        ]);

        assert_eq!(
            edges_of(&graph, "http::pages"),
            ["auth", "auth::accounts", "store::sql"]
        );
    }

    #[test]
    fn super_self_and_child_paths_resolve_from_the_file_module() {
        let graph = graph_of(&[
            ("lib.rs", ""),
            ("store/mod.rs", ""),
            ("auth/mod.rs", "mod sessions;\nuse sessions::Sessions;\n"),
            ("auth/accounts.rs", ""),
            (
                "auth/sessions.rs",
                "mod cache;\nuse super::Item;\nuse super::accounts::{self as acc};\n\
                 use self::cache::Cache;\nuse axum::Router;\n\
                 fn f() { super::super::store::open(); }\n",
            ),
            ("auth/sessions/cache.rs", "use super::super::Item;\n"),
        ]);

        assert_eq!(edges_of(&graph, "auth"), ["auth::sessions"]);
        assert_eq!(
            edges_of(&graph, "auth::sessions"),
            ["auth", "auth::accounts", "auth::sessions::cache", "store"]
        );
        assert_eq!(edges_of(&graph, "auth::sessions::cache"), ["auth"]);
    }

    #[test]
    fn comments_literals_and_test_items_are_no_edges() {
        let source = r####"
            //! Built on crate::b (a doc comment).
            /* crate::b, /* nested */ crate::b */
            /// See [`crate::b::B`].
            pub fn a<'a>(x: &'a str) -> char {
                let _ = "use crate::b; \" crate::b";
                let _ = r#"crate::b "quoted" "#;
                let _ = b"crate::b";
                let quote = '"';
                let _ = '\'';
                crate::c::C::new();
                quote
            }
            #[cfg(test)]
            pub fn helper() { crate::b::B::new(); }
            #[cfg(test)]
            use crate::b::B;
            pub fn after() { crate::d::D::new(); }
            #[cfg(test)]
            mod tests {
                use crate::b::*;
            }
        "####;
        let graph = graph_of(&[
            ("lib.rs", ""),
            ("a.rs", source),
            ("b.rs", ""),
            ("c.rs", ""),
            ("d.rs", ""),
        ]);

        assert_eq!(edges_of(&graph, "a"), ["c", "d"]);
    }

    #[test]
    fn a_module_referring_to_itself_is_no_edge() {
        let graph = graph_of(&[
            ("lib.rs", ""),
            (
                "a.rs",
                "use crate::a::X;\nuse self::X as Y;\npub struct X;\n",
            ),
        ]);

        assert!(edges_of(&graph, "a").is_empty());
    }

    #[test]
    fn precise_capture_and_visibility_paths_are_no_imports() {
        let graph = graph_of(&[
            ("lib.rs", ""),
            ("a/mod.rs", ""),
            (
                "a/b.rs",
                "pub(in crate::a) fn f<'x>() -> impl Sized + use<'x> {}\n\
                 fn g() { crate::c::C::new(); }\n",
            ),
            ("c.rs", ""),
        ]);

        assert_eq!(edges_of(&graph, "a::b"), ["c"]);
    }

    #[test]
    fn store_importing_the_domain_and_model_importing_anything_break_the_layers() {
        let graph = graph_of(&[
            ("lib.rs", ""),
            ("auth/mod.rs", ""),
            ("auth/accounts.rs", ""),
            ("config.rs", ""),
            ("model/mod.rs", "pub mod types;\n"),
            ("model/types.rs", "use crate::config::Config;\n"),
            (
                "store/mod.rs",
                "use crate::model::types::UserId;\nuse crate::config;\n",
            ),
            ("store/sql.rs", "use crate::auth::accounts::LoginError;\n"),
        ]);

        let violations = layering_violations(&graph);

        assert_eq!(violations.len(), 2, "{violations:#?}");
        assert!(violations[0].contains("model::types -> config"));
        assert!(violations[1].contains("store::sql -> auth::accounts"));
    }
}
