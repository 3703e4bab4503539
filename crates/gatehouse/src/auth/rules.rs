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

/// Whether a rule's path covers a request path: a prefix match, and a
/// rule ending in `/` also covers the path without it (`/admin/` covers
/// `/admin`).
fn covers(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        || prefix
            .strip_suffix('/')
            .is_some_and(|p| !p.is_empty() && path == p)
}

/// The policy for one reading of a request: the first rule whose path
/// covers `path` and whose methods (if any) include the method. An unknown
/// method (`None`) matches only rules without a method list, so a
/// method-restricted rule (often a `public` one) never applies to a request
/// whose method the proxy did not say.
pub fn policy_for<'a>(rules: &'a [AccessRule], method: Option<&str>, path: &str) -> &'a RulePolicy {
    rules
        .iter()
        .find(|r| {
            covers(&r.path, path)
                && (r.methods.is_empty()
                    || method
                        .is_some_and(|m| r.methods.iter().any(|rm| rm.eq_ignore_ascii_case(m))))
        })
        .map_or(&DEFAULT_POLICY, |r| &r.policy)
}

/// What a request needs, once every reading of it is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Authentication, and every listed permission.
    Authenticated {
        permissions: Vec<String>,
    },
    Deny,
}

/// Judges a proxied request by every way it could be read, and demands
/// what the strictest reading demands.
///
/// The readings: each original URI the proxy sent (nginx's and Traefik's
/// header may both be present, one of them from the client), each as
/// received, percent-decoded, and fully normalised ([`normalize_path`]);
/// and each stated method (none stated: unknown). An upstream may route on
/// any of those forms, so a path that climbs out of a protected prefix
/// (`/admin/../public/x`) or into one (`/public/%2e%2e/admin/x`) needs what
/// both prefixes need.
///
/// # Errors
/// [`BadPath`] when a URI is not an absolute path or does not decode.
pub fn access_for(
    rules: &[AccessRule],
    methods: &[&str],
    uris: &[&str],
) -> Result<Access, BadPath> {
    let mut paths = Vec::with_capacity(uris.len() * 3);
    for uri in uris {
        let raw = uri.split(['?', '#']).next().unwrap_or_default();
        paths.push(raw.to_owned());
        let decoded = percent_decode(raw)?;
        paths.push(normalize_path(raw)?);
        paths.push(decoded);
    }
    if paths.is_empty() {
        return Err(BadPath);
    }
    let methods: Vec<Option<&str>> = if methods.is_empty() {
        vec![None]
    } else {
        methods.iter().map(|m| Some(*m)).collect()
    };
    let mut all_public = true;
    let mut permissions: Vec<String> = Vec::new();
    for path in &paths {
        for method in &methods {
            match policy_for(rules, *method, path) {
                RulePolicy::Deny => return Ok(Access::Deny),
                RulePolicy::Public => {}
                RulePolicy::Authenticated => all_public = false,
                RulePolicy::Permission(p) => {
                    all_public = false;
                    if !permissions.contains(p) {
                        permissions.push(p.clone());
                    }
                }
            }
        }
    }
    Ok(if all_public {
        Access::Public
    } else {
        Access::Authenticated { permissions }
    })
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

    fn rules() -> Vec<AccessRule> {
        vec![
            rule("/public/", &["GET", "HEAD"], RulePolicy::Public),
            rule("/public/", &[], RulePolicy::Deny),
            rule("/admin/", &[], RulePolicy::Permission("site:admin".into())),
            rule("/closed/", &[], RulePolicy::Deny),
        ]
    }

    #[test]
    fn first_matching_rule_wins_and_default_is_authenticated() {
        let rules = rules();
        assert_eq!(
            policy_for(&rules, Some("GET"), "/public/a"),
            &RulePolicy::Public
        );
        assert_eq!(
            policy_for(&rules, Some("head"), "/public/a"),
            &RulePolicy::Public
        );
        assert_eq!(
            policy_for(&rules, Some("POST"), "/public/a"),
            &RulePolicy::Deny
        );
        assert_eq!(
            policy_for(&rules, Some("GET"), "/admin/x"),
            &RulePolicy::Permission("site:admin".into())
        );
        assert_eq!(
            policy_for(&rules, Some("GET"), "/admin"),
            &RulePolicy::Permission("site:admin".into()),
            "a rule for /admin/ covers /admin"
        );
        assert_eq!(
            policy_for(&rules, Some("GET"), "/administrator"),
            &RulePolicy::Authenticated
        );
        assert_eq!(
            policy_for(&rules, Some("GET"), "/other"),
            &RulePolicy::Authenticated
        );
        assert_eq!(
            policy_for(&[], Some("GET"), "/"),
            &RulePolicy::Authenticated
        );
        // An unknown method never matches a method-restricted rule.
        assert_eq!(policy_for(&rules, None, "/public/a"), &RulePolicy::Deny);
    }

    fn admin() -> Access {
        Access::Authenticated {
            permissions: vec!["site:admin".into()],
        }
    }

    #[test]
    fn the_strictest_reading_of_a_request_wins() {
        let rules = vec![
            rule("/public/", &["GET"], RulePolicy::Public),
            rule("/admin/", &[], RulePolicy::Permission("site:admin".into())),
            rule("/closed/", &[], RulePolicy::Deny),
        ];
        let get = ["GET"];
        let judge = |uri: &str| access_for(&rules, &get, &[uri]).expect("path");
        assert_eq!(judge("/public/x"), Access::Public);
        for climbing in [
            "/admin/../public/x",
            "/admin/%2e%2e/public/x",
            "/admin/..%2fpublic/x",
            "/admin%2f..%2fpublic/x",
            "/public/../admin/x",
            "/public/%2e%2e/admin/x",
            "//admin/x",
        ] {
            assert_eq!(judge(climbing), admin(), "{climbing}");
        }
        assert_eq!(judge("/closed/../public/x"), Access::Deny);
        // Two URIs (a client may add the other proxy's header): both count.
        assert_eq!(
            access_for(&rules, &get, &["/public/x", "/admin/secret"]).expect("paths"),
            admin()
        );
        // Two methods: a public GET rule does not cover a POST.
        assert_eq!(
            access_for(&rules, &["GET", "POST"], &["/public/x"]).expect("path"),
            Access::Authenticated {
                permissions: vec![]
            }
        );
        // No method stated: the GET-only public rule does not apply.
        assert_eq!(
            access_for(&rules, &[], &["/public/x"]).expect("path"),
            Access::Authenticated {
                permissions: vec![]
            }
        );
        assert_eq!(access_for(&rules, &get, &[]), Err(BadPath));
        assert_eq!(access_for(&rules, &get, &["/a%zz"]), Err(BadPath));
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
