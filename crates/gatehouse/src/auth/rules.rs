//! Forward-authentication rules: which policy applies to a proxied
//! request, by path prefix and method. First match wins; no match means
//! "authenticated".

use crate::config::{AccessRule, RulePolicy};

/// The policy when no rule matches.
pub const DEFAULT_POLICY: RulePolicy = RulePolicy::Authenticated;

/// A request path that cannot be judged safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the original path is malformed")]
pub struct BadPath;

/// The path of an original request URI, as the upstream will see it:
/// query and fragment dropped, percent-encoding decoded, `.` and `..`
/// segments resolved (RFC 3986 §5.2.4) and repeated slashes collapsed.
///
/// Rules match this normalised form, so `/public/../admin/x`,
/// `/public/%2e%2e/admin/x` and `//admin/x` are judged as `/admin/x`, the
/// path a normalising upstream serves; a proxy rule on the raw string would
/// be bypassed by them.
///
/// # Errors
/// [`BadPath`] for a path that is empty, not absolute, decodes to invalid
/// UTF-8, or holds a NUL or a backslash.
pub fn normalize_path(original_uri: &str) -> Result<String, BadPath> {
    let path = original_uri.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(BadPath);
    }
    let decoded = percent_decode(path)?;
    if decoded.contains(['\0', '\\']) {
        return Err(BadPath);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    // Keep a trailing slash: `/admin/` and `/admin` are different prefixes.
    if decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || out.is_empty()
    {
        out.push('/');
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, BadPath> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BadPath)?;
            let hex = std::str::from_utf8(hex).map_err(|_| BadPath)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| BadPath)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BadPath)
}

/// The policy for a request: the first rule whose path is a prefix of the
/// normalised path and whose methods (if any) include the method.
pub fn policy_for<'a>(rules: &'a [AccessRule], method: &str, path: &str) -> &'a RulePolicy {
    rules
        .iter()
        .find(|r| {
            path.starts_with(&r.path)
                && (r.methods.is_empty()
                    || r.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
        })
        .map_or(&DEFAULT_POLICY, |r| &r.policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(path: &str, methods: &[&str], policy: RulePolicy) -> AccessRule {
        AccessRule {
            path: path.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            policy,
        }
    }

    #[test]
    fn normalisation_defeats_traversal_and_encoding_tricks() {
        for (raw, want) in [
            ("/admin/x?a=b", "/admin/x"),
            ("/public/../admin/x", "/admin/x"),
            ("/public/%2e%2e/admin/x", "/admin/x"),
            ("/public/%2E%2E%2Fadmin%2Fx", "/admin/x"),
            ("//admin//x", "/admin/x"),
            ("/./admin/./x/", "/admin/x/"),
            ("/../../admin", "/admin"),
            ("/", "/"),
            ("/admin/..", "/"),
            ("/a/b/..", "/a/"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "",
            "admin",
            "/a%zz",
            "/a%",
            "/a%00b",
            "/a\\..\\admin",
            "/%ff",
        ] {
            assert_eq!(normalize_path(bad), Err(BadPath), "{bad:?}");
        }
    }

    #[test]
    fn first_matching_rule_wins_and_default_is_authenticated() {
        let rules = vec![
            rule("/public/", &["GET", "HEAD"], RulePolicy::Public),
            rule("/public/", &[], RulePolicy::Deny),
            rule("/admin/", &[], RulePolicy::Permission("site:admin".into())),
        ];
        assert_eq!(policy_for(&rules, "GET", "/public/a"), &RulePolicy::Public);
        assert_eq!(policy_for(&rules, "head", "/public/a"), &RulePolicy::Public);
        assert_eq!(policy_for(&rules, "POST", "/public/a"), &RulePolicy::Deny);
        assert_eq!(
            policy_for(&rules, "GET", "/admin/x"),
            &RulePolicy::Permission("site:admin".into())
        );
        assert_eq!(
            policy_for(&rules, "GET", "/other"),
            &RulePolicy::Authenticated
        );
        assert_eq!(policy_for(&[], "GET", "/"), &RulePolicy::Authenticated);
    }

    proptest! {
        #[test]
        fn normalised_paths_have_no_dot_segments(raw in "/[a-z./%0-9]{0,40}") {
            if let Ok(p) = normalize_path(&raw) {
                prop_assert!(p.starts_with('/'));
                prop_assert!(!p.split('/').any(|s| s == ".." || s == "."));
                prop_assert!(!p.contains("//"));
            }
        }
    }
}
