//! Key remapping: regex rename rules and prefix strip/add, with a report of what each rule
//! did, which rules matched nothing and which keys no rule touched.

use regex::Regex;
use serde::Serialize;

use crate::error::{Error, Result};

/// One regex rule: every match of `pattern` in a name is replaced by `replacement`
/// (`$1`, `${name}` refer to capture groups).
#[derive(Debug, Clone)]
pub struct RenameRule {
    pattern: Regex,
    replacement: String,
    text: String,
}

impl RenameRule {
    /// Parses `PATTERN=REPLACEMENT` (the first `=` separates them), e.g.
    /// `^model\.(.*)=$1` or `\.gamma$=.weight`.
    pub fn parse(text: &str) -> Result<Self> {
        let (pat, rep) = text.split_once('=').ok_or_else(|| {
            Error::Invalid(format!(
                "rename rule `{text}` has no `=`; write PATTERN=REPLACEMENT, e.g. '^model\\.(.*)=$1'"
            ))
        })?;
        let pattern = Regex::new(pat)
            .map_err(|e| Error::Invalid(format!("rename rule `{text}`: bad regex: {e}")))?;
        Ok(RenameRule {
            pattern,
            replacement: rep.to_string(),
            text: text.to_string(),
        })
    }

    /// The rule as written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// An ordered set of renaming steps, applied in order: strip prefix, rules, add prefix.
#[derive(Debug, Clone, Default)]
pub struct Renamer {
    /// A prefix removed from names that start with it (`model.`).
    pub strip_prefix: Option<String>,
    /// Regex rules, applied in order, each to the result of the previous.
    pub rules: Vec<RenameRule>,
    /// A prefix added to every name.
    pub add_prefix: Option<String>,
}

/// How one rule fared.
#[derive(Debug, Clone, Serialize)]
pub struct RuleOutcome {
    /// The rule as written (`strip-prefix:model.` for prefix steps).
    pub rule: String,
    /// How many names it changed.
    pub applied: usize,
}

/// What renaming did to a list of names.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RenameReport {
    /// `(old, new)` for every name, in input order (equal when untouched).
    pub mapping: Vec<(String, String)>,
    /// Each step with how many names it changed.
    pub rules: Vec<RuleOutcome>,
    /// Steps that changed no name: usually a typo in the rule.
    pub unmatched_rules: Vec<String>,
    /// Names no step changed.
    pub untouched: Vec<String>,
}

impl Renamer {
    /// Whether the renamer changes nothing.
    pub fn is_empty(&self) -> bool {
        self.strip_prefix.is_none() && self.rules.is_empty() && self.add_prefix.is_none()
    }

    /// Renames `names`. Fails if two names end up equal or a name becomes empty.
    pub fn apply<S: AsRef<str>>(&self, names: &[S]) -> Result<RenameReport> {
        let mut current: Vec<String> = names.iter().map(|n| n.as_ref().to_string()).collect();
        let mut touched = vec![false; current.len()];
        let mut outcomes = Vec::new();
        let mut step = |label: String, f: &dyn Fn(&str) -> Option<String>| {
            let mut applied = 0;
            for (name, hit) in current.iter_mut().zip(touched.iter_mut()) {
                if let Some(new) = f(name) {
                    if &new != name {
                        *name = new;
                        *hit = true;
                        applied += 1;
                    }
                }
            }
            outcomes.push(RuleOutcome {
                rule: label,
                applied,
            });
        };
        if let Some(p) = &self.strip_prefix {
            step(format!("strip-prefix:{p}"), &|n| {
                n.strip_prefix(p.as_str()).map(str::to_string)
            });
        }
        for r in &self.rules {
            step(r.text.clone(), &|n| {
                r.pattern.is_match(n).then(|| {
                    r.pattern
                        .replace_all(n, r.replacement.as_str())
                        .into_owned()
                })
            });
        }
        if let Some(p) = &self.add_prefix {
            step(format!("add-prefix:{p}"), &|n| Some(format!("{p}{n}")));
        }
        let mut seen = std::collections::HashMap::new();
        for (old, new) in names.iter().zip(&current) {
            if new.is_empty() {
                return Err(Error::Invalid(format!(
                    "renaming turns `{}` into an empty name",
                    old.as_ref()
                )));
            }
            if let Some(prev) = seen.insert(new.clone(), old.as_ref().to_string()) {
                return Err(Error::Invalid(format!(
                    "renaming maps both `{prev}` and `{}` to `{new}`",
                    old.as_ref()
                )));
            }
        }
        Ok(RenameReport {
            unmatched_rules: outcomes
                .iter()
                .filter(|o| o.applied == 0)
                .map(|o| o.rule.clone())
                .collect(),
            untouched: names
                .iter()
                .zip(&touched)
                .filter(|(_, &t)| !t)
                .map(|(n, _)| n.as_ref().to_string())
                .collect(),
            mapping: names
                .iter()
                .map(|n| n.as_ref().to_string())
                .zip(current)
                .collect(),
            rules: outcomes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_report_applied_unmatched_and_untouched() {
        let r = Renamer {
            strip_prefix: Some("model.".into()),
            rules: vec![
                RenameRule::parse(r"\.gamma$=.weight").unwrap(),
                RenameRule::parse(r"^nomatch=x").unwrap(),
            ],
            add_prefix: None,
        };
        let rep = r
            .apply(&["model.ln.gamma", "model.fc.weight", "head.bias"])
            .unwrap();
        assert_eq!(rep.mapping[0].1, "ln.weight");
        assert_eq!(rep.mapping[1].1, "fc.weight");
        assert_eq!(rep.untouched, vec!["head.bias"]);
        assert_eq!(rep.unmatched_rules, vec!["^nomatch=x"]);
        assert_eq!(rep.rules[0].applied, 2);
    }

    #[test]
    fn collisions_and_bad_rules_are_errors() {
        let r = Renamer {
            rules: vec![RenameRule::parse(r"^(a|b)$=c").unwrap()],
            ..Default::default()
        };
        assert!(r
            .apply(&["a", "b"])
            .unwrap_err()
            .to_string()
            .contains("both"));
        assert!(RenameRule::parse("no-equals").is_err());
        assert!(RenameRule::parse("([=x").is_err());
    }
}
