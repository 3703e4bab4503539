//! Forward-authentication rules: which policy applies to a proxied
//! request, by path prefix and method. First match wins; no match means
//! "authenticated".
//!
//! A proxied request is judged by every way an upstream could read it, and
//! needs what the strictest reading needs: the path as sent, percent-decoded
//! once or repeatedly (double encoding), with `.`/`..` segments resolved,
//! with `;` path parameters dropped (Tomcat, Jetty), with trailing dots and
//! spaces trimmed from segments (Windows, IIS), and compared with and without
//! regard to ASCII case. Paths are bytes: a byte that is not UTF-8 (nginx
//! passes the request line's raw bytes on) is judged like any other.

use crate::config::{AccessRule, RulePolicy};

/// The policy when no rule matches.
pub const DEFAULT_POLICY: RulePolicy = RulePolicy::Authenticated;

/// How many rounds of percent-decoding are judged (`%25252e` is three).
const MAX_DECODES: usize = 3;

/// A request path that cannot be judged safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the original path is malformed")]
pub struct BadPath;

/// A path with `.` and `..` segments resolved (RFC 3986 §5.2.4) and
/// repeated slashes collapsed; a trailing slash is kept, since `/admin/` and
/// `/admin` are different prefixes.
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if path.ends_with(b"/") || path.ends_with(b"/.") || path.ends_with(b"/..") || out.is_empty() {
        out.push(b'/');
    }
    out
}

/// The path as lenient upstreams read it: each segment's `;` parameters
/// dropped (`/public/..;/admin` is `/admin` on Tomcat), then its trailing
/// dots and spaces trimmed (`/admin./x` is `/admin/x` on Windows), except
/// that a `.` or `..` segment stays what it is.
fn lenient(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        let segment = segment.split(|&b| b == b';').next().unwrap_or_default();
        if segment == b"." || segment == b".." {
            out.extend_from_slice(segment);
            continue;
        }
        let end = segment
            .iter()
            .rposition(|&b| b != b'.' && b != b' ')
            .map_or(0, |p| p + 1);
        out.extend_from_slice(&segment[..end]);
    }
    out
}

/// One round of percent-decoding.
///
/// # Errors
/// [`BadPath`] for a `%` not followed by two hex digits.
fn percent_decode(bytes: &[u8]) -> Result<Vec<u8>, BadPath> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BadPath)?;
            let digit = |b: u8| (b as char).to_digit(16).ok_or(BadPath);
            // Two hex digits make at most 0xff: the cast cannot truncate.
            out.push((digit(hex[0])? * 16 + digit(hex[1])?) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Whether a path holds a byte no upstream should see in a path: an ASCII
/// control (NUL, CR, LF, tab, DEL: upstreams truncate at them or strip them)
/// or a backslash (a separator on Windows and some frameworks).
fn unjudgeable(path: &[u8]) -> bool {
    path.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\')
}

fn push_unique(out: &mut Vec<Vec<u8>>, reading: Vec<u8>) {
    if !out.contains(&reading) {
        out.push(reading);
    }
}

/// Every reading of one original URI's path (see the module's comment).
///
/// # Errors
/// [`BadPath`] for a path that is not absolute, has a malformed escape, or
/// holds (literally or once decoded) a control byte or a backslash.
pub fn readings(uri: &[u8]) -> Result<Vec<Vec<u8>>, BadPath> {
    let path = uri.split(|&b| b == b'?').next().unwrap_or_default();
    let mut bases = vec![path];
    // A raw `#` is no fragment to every upstream: judge the path with and
    // without what follows it.
    if let Some(cut) = path.iter().position(|&b| b == b'#') {
        bases.push(&path[..cut]);
    }
    let mut out = Vec::with_capacity(3);
    for base in bases {
        if !base.starts_with(b"/") {
            return Err(BadPath);
        }
        let mut level = base.to_vec();
        for depth in 0..=MAX_DECODES {
            if unjudgeable(&level) {
                return Err(BadPath);
            }
            push_unique(&mut out, normalize(&level));
            push_unique(&mut out, normalize(&lenient(&level)));
            // A decoded `%3f` or `%23` is a query or fragment to an upstream
            // that decodes before it splits.
            if depth > 0
                && let Some(cut) = level.iter().position(|&b| b == b'?' || b == b'#')
            {
                push_unique(&mut out, normalize(&level[..cut]));
            }
            let next = if level.contains(&b'%') && depth < MAX_DECODES {
                match percent_decode(&level) {
                    Ok(next) => Some(next),
                    // The first decoding is the one every upstream does; a
                    // deeper one that fails is a literal `%` to them.
                    Err(e) if depth == 0 => return Err(e),
                    Err(_) => None,
                }
            } else {
                None
            };
            push_unique(&mut out, level);
            match next {
                Some(next) => level = next,
                None => break,
            }
        }
    }
    Ok(out)
}

/// Whether a rule's path covers a request path: a prefix match, and a
/// rule ending in `/` also covers the path without it (`/admin/` covers
/// `/admin`). `fold` compares ASCII letters regardless of case.
fn covers(prefix: &[u8], path: &[u8], fold: bool) -> bool {
    let eq = |a: &[u8], b: &[u8]| {
        if fold {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    path.get(..prefix.len())
        .is_some_and(|head| eq(head, prefix))
        || prefix
            .strip_suffix(b"/")
            .is_some_and(|p| !p.is_empty() && eq(path, p))
}

/// The policy for one reading of a request: the first rule whose path
/// covers `path` (case-insensitively when `fold`) and whose methods (if
/// any) include the method. An unknown method (`None`) matches only rules
/// without a method list; [`access_for`] also judges it as every method a
/// rule names.
pub fn policy_for<'a>(
    rules: &'a [AccessRule],
    method: Option<&str>,
    path: &[u8],
    fold: bool,
) -> &'a RulePolicy {
    rule_for(rules, method, path, fold).map_or(&DEFAULT_POLICY, |r| &r.policy)
}

/// The rule [`policy_for`] takes its policy from; `None` when no rule
/// covers the reading (the default policy applies).
fn rule_for<'a>(
    rules: &'a [AccessRule],
    method: Option<&str>,
    path: &[u8],
    fold: bool,
) -> Option<&'a AccessRule> {
    rules.iter().find(|r| {
        covers(r.path.as_bytes(), path, fold)
            && (r.methods.is_empty()
                || method.is_some_and(|m| r.methods.iter().any(|rm| rm.eq_ignore_ascii_case(m))))
    })
}

/// What a request needs, once every reading of it is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Authentication, and every listed permission; with `mfa`, by a
    /// session that proved a second factor.
    Authenticated {
        permissions: Vec<String>,
        mfa: bool,
    },
    Deny,
}

/// Judges a proxied request by every way it could be read, and demands
/// what the strictest reading demands.
///
/// The readings: each original URI the proxy sent (nginx's and Traefik's
/// header may both be present, one of them from the client), each read as
/// [`readings`] says, each compared case-sensitively and not; and each
/// stated method. No method stated means any method: the request is judged
/// as each method a rule names and as an unnamed one, so a `GET`-only
/// `public` rule does not open it and a `DELETE`-only `deny` rule closes it.
/// An upstream may route on any of those forms, so a path that climbs out
/// of a protected prefix (`/admin/../public/x`) or into one
/// (`/public/..;/admin/x`) needs what both prefixes need.
///
/// # Errors
/// [`BadPath`] when there is no URI, or one cannot be judged ([`readings`]).
pub fn access_for(
    rules: &[AccessRule],
    methods: &[&str],
    uris: &[&[u8]],
) -> Result<Access, BadPath> {
    let mut paths = Vec::with_capacity(uris.len() * 2);
    for uri in uris {
        for reading in readings(uri)? {
            push_unique(&mut paths, reading);
        }
    }
    if paths.is_empty() {
        return Err(BadPath);
    }
    let mut judged: Vec<Option<&str>> = methods.iter().map(|m| Some(*m)).collect();
    if judged.is_empty() {
        judged.push(None);
        for m in rules.iter().flat_map(|r| &r.methods) {
            if !judged.contains(&Some(m.as_str())) {
                judged.push(Some(m));
            }
        }
    }
    let mut all_public = true;
    let mut mfa = false;
    let mut permissions: Vec<String> = Vec::new();
    for path in &paths {
        for method in &judged {
            for fold in [false, true] {
                let rule = rule_for(rules, *method, path, fold);
                mfa |= rule.is_some_and(|r| r.mfa);
                match rule.map_or(&DEFAULT_POLICY, |r| &r.policy) {
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
    }
    Ok(if all_public {
        Access::Public
    } else {
        Access::Authenticated { permissions, mfa }
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
            mfa: false,
        }
    }

    fn norm(raw: &str) -> String {
        String::from_utf8(normalize(raw.as_bytes())).expect("utf-8")
    }

    #[test]
    fn normalisation_resolves_dot_segments_and_slashes() {
        for (raw, want) in [
            ("/public/../admin/x", "/admin/x"),
            ("//admin//x", "/admin/x"),
            ("/./admin/./x/", "/admin/x/"),
            ("/../../admin", "/admin"),
            ("/", "/"),
            ("/admin/..", "/"),
            ("/a/b/..", "/a/"),
        ] {
            assert_eq!(norm(raw), want, "{raw}");
        }
    }

    #[test]
    fn lenient_reading_drops_parameters_and_trailing_dots() {
        for (raw, want) in [
            ("/public/..;/admin/x", "/public/../admin/x"),
            ("/admin;jsessionid=1/y", "/admin/y"),
            ("/admin./x", "/admin/x"),
            ("/admin. . /x", "/admin/x"),
            ("/a/./b/../c", "/a/./b/../c"),
            ("/plain/path", "/plain/path"),
        ] {
            assert_eq!(lenient(raw.as_bytes()), raw_bytes(want), "{raw}");
        }
    }

    fn raw_bytes(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn unjudgeable_paths_are_refused() {
        for bad in [
            &b""[..],
            b"admin",
            b"/a%zz",
            b"/a%",
            b"/a%00b",
            b"/a\\..\\admin",
            b"/a%5c..%5cadmin",
            b"/a%0d%0aX: y",
            b"/a\tb",
            b"/a%7f",
            b"/a%2500",
        ] {
            assert_eq!(
                readings(bad),
                Err(BadPath),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Raw bytes that are not UTF-8 are judged, not refused.
        assert!(readings(b"/admin/\xff").is_ok());
        assert!(readings(b"/admin/secret?\xc3\xa9").is_ok());
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
        let p = |m: Option<&str>, path: &str| policy_for(&rules, m, path.as_bytes(), false);
        assert_eq!(p(Some("GET"), "/public/a"), &RulePolicy::Public);
        assert_eq!(p(Some("head"), "/public/a"), &RulePolicy::Public);
        assert_eq!(p(Some("POST"), "/public/a"), &RulePolicy::Deny);
        assert_eq!(
            p(Some("GET"), "/admin/x"),
            &RulePolicy::Permission("site:admin".into())
        );
        assert_eq!(
            p(Some("GET"), "/admin"),
            &RulePolicy::Permission("site:admin".into()),
            "a rule for /admin/ covers /admin"
        );
        assert_eq!(p(Some("GET"), "/administrator"), &RulePolicy::Authenticated);
        assert_eq!(p(Some("GET"), "/other"), &RulePolicy::Authenticated);
        assert_eq!(p(Some("GET"), "/ADMIN/x"), &RulePolicy::Authenticated);
        assert_eq!(
            policy_for(&rules, Some("GET"), b"/ADMIN/x", true),
            &RulePolicy::Permission("site:admin".into())
        );
        assert_eq!(
            policy_for(&[], Some("GET"), b"/", false),
            &RulePolicy::Authenticated
        );
        // An unknown method never matches a method-restricted rule.
        assert_eq!(p(None, "/public/a"), &RulePolicy::Deny);
    }

    fn admin() -> Access {
        Access::Authenticated {
            permissions: vec!["site:admin".into()],
            mfa: false,
        }
    }

    fn authenticated() -> Access {
        Access::Authenticated {
            permissions: vec![],
            mfa: false,
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
        let judge = |uri: &[u8]| access_for(&rules, &get, &[uri]).expect("path");
        assert_eq!(judge(b"/public/x"), Access::Public);
        assert_eq!(judge(b"/public/x?a=../../admin"), Access::Public);
        assert_eq!(judge(b"/public/caf\xc3\xa9"), Access::Public);
        for climbing in [
            &b"/admin/../public/x"[..],
            b"/admin/%2e%2e/public/x",
            b"/admin/..%2fpublic/x",
            b"/admin%2f..%2fpublic/x",
            b"/public/../admin/x",
            b"/public/%2e%2e/admin/x",
            b"/public/%2E%2E%2Fadmin%2Fx",
            b"//admin/x",
            // Path parameters, case, trailing dots, double encoding.
            b"/public/..;/admin/x",
            b"/public/..;x=y/admin/x",
            b"/admin;x/y",
            b"/ADMIN/x",
            b"/Admin/x",
            b"/admin./x",
            b"/admin%2e/x",
            b"/public/%252e%252e/admin/x",
            b"/public/%25252e%25252e/admin/x",
            b"/public/%252e%252e%252fadmin/x",
            // A raw `#`, and a decoded `?`.
            b"/public/x#/../../admin/y",
            b"/admin%3f/../public/x",
            // Bytes that are not UTF-8 are judged, not dropped.
            b"/admin/\xff",
            b"/admin/secret?\xc3\xa9",
            b"/admin/%ff",
            b"/admin/\x80\x85",
        ] {
            assert_eq!(
                judge(climbing),
                admin(),
                "{}",
                String::from_utf8_lossy(climbing)
            );
        }
        assert_eq!(judge(b"/closed/../public/x"), Access::Deny);
        assert_eq!(judge(b"/CLOSED/x"), Access::Deny);
        assert_eq!(judge(b"/closed;a/x"), Access::Deny);
        assert_eq!(judge(b"/public/%2e%2e;/closed/x"), Access::Deny);
        // Two URIs (a client may add the other proxy's header): both count.
        assert_eq!(
            access_for(&rules, &get, &[b"/public/x", b"/admin/secret"]).expect("paths"),
            admin()
        );
        // Two methods: a public GET rule does not cover a POST.
        assert_eq!(
            access_for(&rules, &["GET", "POST"], &[b"/public/x"]).expect("path"),
            authenticated()
        );
        // No method stated: the GET-only public rule does not apply.
        assert_eq!(
            access_for(&rules, &[], &[b"/public/x"]).expect("path"),
            authenticated()
        );
        assert_eq!(access_for(&rules, &get, &[]), Err(BadPath));
        assert_eq!(access_for(&rules, &get, &[b"/a%zz"]), Err(BadPath));
    }

    #[test]
    fn an_unstated_method_is_judged_as_every_method_a_rule_names() {
        let rules = vec![
            rule("/api/", &["DELETE"], RulePolicy::Deny),
            rule("/api/", &[], RulePolicy::Authenticated),
        ];
        assert_eq!(access_for(&rules, &[], &[b"/api/x"]), Ok(Access::Deny));
        assert_eq!(
            access_for(&rules, &["GET"], &[b"/api/x"]),
            Ok(authenticated())
        );
    }

    proptest! {
        #[test]
        fn normalised_paths_have_no_dot_segments(raw in "/[a-z./%0-9;]{0,40}") {
            if let Ok(readings) = readings(raw.as_bytes()) {
                prop_assert!(!readings.is_empty());
                for r in readings {
                    prop_assert!(r.starts_with(b"/"));
                }
            }
            let p = normalize(raw.as_bytes());
            prop_assert!(p.starts_with(b"/"));
            prop_assert!(!p.split(|&b| b == b'/').any(|s| s == b".." || s == b"."));
            prop_assert!(!p.windows(2).any(|w| w == b"//"));
        }

        /// Whatever the bytes, judging never panics, and a path under
        /// `/admin/` is never public.
        #[test]
        fn any_bytes_under_a_protected_prefix_stay_protected(tail in proptest::collection::vec(any::<u8>(), 0..24)) {
            let rules = vec![
                rule("/public/", &[], RulePolicy::Public),
                rule("/admin/", &[], RulePolicy::Permission("site:admin".into())),
            ];
            let mut uri = b"/admin/".to_vec();
            uri.extend_from_slice(&tail);
            // A path that cannot be judged is a 400, which is closed too.
            if let Ok(access) = access_for(&rules, &["GET"], &[&uri]) {
                prop_assert_ne!(access, Access::Public);
            }
        }
    }
}
