//! The reference in `docs/reference/` against the code it describes: every
//! configuration key, every command and option, every HTTP operation with
//! its status codes, in both directions; and no file of the repository
//! pointing outside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::helpers::TestApp;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository's root")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The cells of each Markdown table row whose first cell is code
/// (`` `…` ``), the backticks removed from the first.
fn code_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|line| {
            let cells: Vec<String> = line
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            let first = cells
                .first()?
                .strip_prefix('`')?
                .strip_suffix('`')?
                .to_owned();
            Some(
                std::iter::once(first)
                    .chain(cells.into_iter().skip(1))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn every_configuration_key_is_in_the_reference_and_nothing_else() {
    let text = read("docs/reference/configuration.md");
    let rows = code_rows(&text);
    let documented: BTreeMap<String, String> = rows
        .iter()
        .map(|cells| (cells[0].clone(), cells.get(1).cloned().unwrap_or_default()))
        .collect();
    assert_eq!(documented.len(), rows.len(), "a key documented twice");
    let keys: BTreeMap<&str, bool> = gatehouse::config::keys().collect();
    let code: BTreeSet<&str> = keys.keys().copied().collect();
    let docs: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    assert_eq!(
        code.difference(&docs).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "keys in config.rs missing from docs/reference/configuration.md"
    );
    assert_eq!(
        docs.difference(&code).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "keys in docs/reference/configuration.md that config.rs does not know"
    );
    for (key, env) in keys {
        let expected = if env {
            format!("`GATEHOUSE_{}`", key.to_uppercase())
        } else {
            "file only".to_owned()
        };
        assert_eq!(documented[key], expected, "the environment column of {key}");
    }
}

/// Every command that runs something (`user create`, `serve`, …), with its
/// long options but the global ones.
fn leaf_commands() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(cmd: &clap::Command, path: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
        let subcommands: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subcommands.is_empty() {
            let options = cmd
                .get_arguments()
                .filter(|a| !a.is_global_set())
                .filter_map(|a| a.get_long())
                .filter(|l| !["help", "version", "config"].contains(l))
                .map(|l| format!("--{l}"))
                .collect();
            out.insert(path.to_owned(), options);
        }
        for sub in subcommands {
            let path = if path.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{path} {}", sub.get_name())
            };
            walk(sub, &path, out);
        }
    }
    let mut out = BTreeMap::new();
    let mut cmd = gatehouse::cli::command();
    cmd.build();
    walk(&cmd, "", &mut out);
    out
}

#[test]
fn every_command_and_option_is_in_the_reference_and_nothing_else() {
    let text = read("docs/reference/cli.md");
    // Each command's section: from its heading to the next.
    let mut sections: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            let name = heading
                .strip_prefix("`gatehouse ")
                .and_then(|h| h.strip_suffix('`'))
                .unwrap_or_else(|| panic!("a section that is not a command: {line:?}"));
            assert!(
                sections.insert(name.to_owned(), String::new()).is_none(),
                "{name} twice"
            );
            current = Some(name.to_owned());
        } else if let Some(name) = &current {
            let section = sections.get_mut(name).expect("the current section");
            section.push_str(line);
            section.push('\n');
        }
    }
    let commands = leaf_commands();
    assert!(commands.contains_key("user create") && commands.contains_key("config check"));
    let code: BTreeSet<&String> = commands.keys().collect();
    let docs: BTreeSet<&String> = sections.keys().collect();
    assert_eq!(
        code, docs,
        "commands (left: the code; right: docs/reference/cli.md)"
    );
    for (command, options) in &commands {
        for option in options {
            assert!(
                sections[command].contains(option.as_str()),
                "`gatehouse {command}` has {option}, which its section does not mention"
            );
        }
    }
    assert!(text.contains("--config FILE"), "the global option");
}

#[tokio::test]
async fn every_operation_and_status_is_in_the_reference_and_nothing_else() {
    let app = TestApp::spawn().await;
    let doc = crate::openapi::document(&app).await;
    let mut code: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if !["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            let statuses = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .cloned()
                .collect();
            code.insert(format!("{} {path}", method.to_uppercase()), statuses);
        }
    }
    let text = read("docs/reference/http.md");
    let mut docs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for cells in code_rows(&text) {
        let statuses = cells
            .get(2)
            .unwrap_or_else(|| panic!("no answers column: {cells:?}"))
            .split(", ")
            .map(str::to_owned)
            .collect();
        assert!(
            docs.insert(cells[0].clone(), statuses).is_none(),
            "{} twice",
            cells[0]
        );
    }
    let operations = |m: &BTreeMap<String, BTreeSet<String>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        operations(&code),
        operations(&docs),
        "operations (left: /openapi.json; right: docs/reference/http.md)"
    );
    for (operation, statuses) in &code {
        assert_eq!(
            &docs[operation], statuses,
            "the status codes of {operation}"
        );
    }
}

/// Every text file the repository holds, but what git ignores.
fn repository_files() -> Vec<PathBuf> {
    let out = std::process::Command::new("git")
        .current_dir(repo())
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .output()
        .expect("running git ls-files (git is needed to list the repository)");
    assert!(out.status.success(), "git ls-files: {out:?}");
    String::from_utf8(out.stdout)
        .expect("UTF-8 paths")
        .lines()
        .map(|p| repo().join(p))
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn no_file_refers_outside_the_repository() {
    let mut outside = Vec::new();
    let mut broken = Vec::new();
    let root = repo();
    for file in repository_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // not text
        };
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        if text
            .lines()
            .any(|l| l.starts_with("<<<<<<< ") || l.starts_with(">>>>>>> "))
        {
            outside.push(format!("{shown}: a merge conflict's marker"));
        }
        for needle in [
            "../shared",
            "shared/API.md",
            "shared/vectors",
            "FIELD-NOTES.md",
        ] {
            if text.contains(needle) && !shown.ends_with("tests/api/reference.rs") {
                outside.push(format!("{shown}: {needle}"));
            }
        }
        if file.extension().is_some_and(|e| e == "md") {
            // Relative Markdown links: [text](path) must name a file or
            // folder inside the repository.
            for target in text
                .split("](")
                .skip(1)
                .filter_map(|rest| rest.split(')').next())
            {
                let target = target.split('#').next().unwrap_or_default();
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let resolved = file.parent().expect("a folder").join(target);
                match resolved.canonicalize() {
                    Ok(p) if p.starts_with(&root) => {}
                    _ => broken.push(format!("{shown}: ({target})")),
                }
            }
        }
    }
    assert!(
        outside.is_empty(),
        "files that point outside the repository: {outside:#?}"
    );
    assert!(
        broken.is_empty(),
        "links to nothing inside the repository: {broken:#?}"
    );
}
