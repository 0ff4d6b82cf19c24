//! The leak check: no secret may appear in captured logs or responses.
//!
//! The failure message names which secret leaked by its position in the list, its first four
//! characters and its length, and shows the offending line with every secret masked, so the
//! test report itself does not become the leak.

/// Panics if any of `secrets` occurs in `haystack`.
///
/// Accepts `&[&str]`, `&[String]` or `&Vec<String>`. An empty secret is a bug in the test (it
/// matches everywhere) and panics too.
#[track_caller]
pub fn assert_no_secrets<S: AsRef<str>>(haystack: &str, secrets: &[S]) {
    if let Err(report) = check_no_secrets(haystack, secrets) {
        panic!("{report}");
    }
}

/// The check behind [`assert_no_secrets`], returning the report instead of panicking.
pub fn check_no_secrets<S: AsRef<str>>(haystack: &str, secrets: &[S]) -> Result<(), String> {
    let secrets: Vec<&str> = secrets.iter().map(AsRef::as_ref).collect();
    if let Some(i) = secrets.iter().position(|s| s.is_empty()) {
        return Err(format!(
            "assert_no_secrets was given an empty secret (#{i}), which matches everything"
        ));
    }
    let mut report = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        let count = haystack.matches(secret).count();
        if count == 0 {
            continue;
        }
        let (line_no, line) = haystack
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains(secret))
            // A secret spanning a line break: fall back to the whole text.
            .unwrap_or((0, haystack));
        report.push(format!(
            "secret #{i} ({}, {} chars) appears {count} time(s); first on line {}: {}",
            describe(secret),
            secret.chars().count(),
            line_no + 1,
            mask(line, &secrets, 400),
        ));
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(format!("secret leak:\n  {}", report.join("\n  ")))
    }
}

/// `text` with every secret replaced by `[SECRET #i]`, cut to `max` characters.
pub fn mask<S: AsRef<str>>(text: &str, secrets: &[S], max: usize) -> String {
    let mut out = text.to_string();
    // Longest first, so a secret that contains another is masked whole.
    let mut order: Vec<(usize, &str)> = secrets
        .iter()
        .map(AsRef::as_ref)
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    order.sort_by_key(|(_, s)| std::cmp::Reverse(s.len()));
    for (i, s) in order {
        out = out.replace(s, &format!("[SECRET #{i}]"));
    }
    if out.chars().count() > max {
        out = out.chars().take(max).collect::<String>() + "…";
    }
    out
}

fn describe(secret: &str) -> String {
    let head: String = secret.chars().take(4).collect();
    format!("`{head}…`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_when_clean_and_reports_without_the_secret() {
        assert_no_secrets("all good here", &["FAKESECRETabcdef123456"]);
        assert_no_secrets("", &Vec::<String>::new());

        let secret = "FAKESECRETabcdef123456";
        let logs =
            format!("line one\n{{\"msg\":\"oops\",\"key\":\"{secret}\"}}\nline three {secret}");
        let report =
            check_no_secrets(&logs, &[String::from("unrelated"), secret.to_string()]).unwrap_err();
        assert!(report.contains("secret #1"), "{report}");
        assert!(report.contains("`FAKE…`"), "{report}");
        assert!(report.contains("2 time(s)"), "{report}");
        assert!(report.contains("line 2"), "{report}");
        assert!(report.contains("[SECRET #1]"), "{report}");
        assert!(!report.contains(secret), "{report}");
    }

    #[test]
    #[should_panic(expected = "secret leak")]
    fn panics_on_a_leak() {
        assert_no_secrets("token=eyJabc.def.ghi", &["eyJabc.def.ghi"]);
    }

    #[test]
    fn empty_secret_is_a_test_bug() {
        assert!(
            check_no_secrets("x", &[""])
                .unwrap_err()
                .contains("empty secret")
        );
    }
}
