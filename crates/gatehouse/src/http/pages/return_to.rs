//! Where a page may send the browser after a login: the `return_to`
//! parameter, accepted only when it cannot lead off the allowed origins (no
//! open redirects: OWASP "Unvalidated Redirects and Forwards" cheat sheet).

use std::collections::HashSet;

use url::Url;

/// Where the pages go when `return_to` is absent or refused.
pub const DEFAULT: &str = "/account";

/// Longest `return_to` considered; anything longer is refused.
const MAX_LEN: usize = 2048;

/// A stand-in origin to resolve relative paths against; `.invalid` (RFC
/// 2606) can never be a real host, so a path that resolves anywhere else
/// escaped its origin.
const BASE: &str = "https://gatehouse.invalid/";

/// A redirect target that passed [`ReturnTo::parse`]: a path on this server,
/// or an absolute URL on an allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo(String);

impl ReturnTo {
    /// The default target, `/account`.
    pub fn account() -> Self {
        Self(DEFAULT.to_owned())
    }

    /// Accepts `raw` when it is
    /// - a path: starts with exactly one `/` (not `//`, which browsers read
    ///   as another host), or
    /// - an absolute `http(s)` URL whose origin is in `allowed` (the
    ///   issuer's origin and `allowed_origins`), without userinfo;
    ///
    /// and holds no control characters, whitespace or backslashes anywhere:
    /// browsers drop tabs and newlines from URLs and read `\` as `/`, which
    /// is how `/\evil.example` and `/<TAB>/evil.example` become
    /// `//evil.example` after a check. The value returned is the parsed,
    /// re-serialised form, so what is checked is what is sent.
    pub fn parse(raw: &str, allowed: &HashSet<String>) -> Option<Self> {
        if raw.is_empty()
            || raw.len() > MAX_LEN
            || raw
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return None;
        }
        if raw.starts_with('/') {
            if raw.starts_with("//") {
                return None;
            }
            let base = Url::parse(BASE).ok()?;
            let url = base.join(raw).ok()?;
            if url.origin() != base.origin() {
                return None;
            }
            let mut target = url.path().to_owned();
            if let Some(q) = url.query() {
                target.push('?');
                target.push_str(q);
            }
            if let Some(f) = url.fragment() {
                target.push('#');
                target.push_str(f);
            }
            // Dot segments can make a path that starts with `//` out of one
            // that did not (`/.//evil.example`): judge the result too.
            return (!target.starts_with("//")).then_some(Self(target));
        }
        let url = Url::parse(raw).ok()?;
        let origin_ok = matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && allowed.contains(&url.origin().ascii_serialization());
        origin_ok.then(|| Self(url.into()))
    }

    /// Like [`ReturnTo::parse`], but the default target when refused or
    /// absent: a bad `return_to` is replaced silently, never reported, so it
    /// cannot be used to probe the allow-list.
    pub fn parse_or_default(raw: Option<&str>, allowed: &HashSet<String>) -> Self {
        raw.and_then(|r| Self::parse(r, allowed))
            .unwrap_or_else(Self::account)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the default target (then links need not carry it).
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allowed() -> HashSet<String> {
        ["http://127.0.0.1:8080", "https://allowed.example"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn parse(raw: &str) -> Option<String> {
        ReturnTo::parse(raw, &allowed()).map(|r| r.0)
    }

    #[test]
    fn paths_on_this_server_are_accepted() {
        assert_eq!(parse("/account").as_deref(), Some("/account"));
        assert_eq!(parse("/a/b?x=1&y=2#f").as_deref(), Some("/a/b?x=1&y=2#f"));
        assert_eq!(parse("/").as_deref(), Some("/"));
        // Dot segments resolve on this server; they cannot climb out of it.
        assert_eq!(parse("/../../etc").as_deref(), Some("/etc"));
        // Percent-encoded slashes stay a path on this server.
        assert_eq!(
            parse("/%2F%2Fevil.example").as_deref(),
            Some("/%2F%2Fevil.example")
        );
        assert_eq!(parse("/caf\u{e9}").as_deref(), Some("/caf%C3%A9"));
    }

    #[test]
    fn allowed_absolute_urls_are_accepted() {
        assert_eq!(
            parse("https://allowed.example/after?x=1").as_deref(),
            Some("https://allowed.example/after?x=1")
        );
        assert_eq!(
            parse("http://127.0.0.1:8080/account").as_deref(),
            Some("http://127.0.0.1:8080/account")
        );
        // Default ports are part of the same origin.
        assert_eq!(
            parse("https://allowed.example:443/").as_deref(),
            Some("https://allowed.example/")
        );
    }

    #[test]
    fn open_redirects_are_refused() {
        for raw in [
            "",
            "//evil.example",
            "//evil.example/account",
            "///evil.example",
            "/.//evil.example",
            "/..//evil.example",
            "/a/..//evil.example",
            "/%2e//evil.example",
            "https://evil.example",
            "https://evil.example/account",
            "/\\evil.example",
            "\\/evil.example",
            "/\\/evil.example",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "https://allowed.example.evil.com",
            "https://allowed.example.evil.com/",
            "https://allowed.example@evil.com/",
            "https://user:pw@allowed.example/",
            "http://allowed.example/",
            "https://allowed.example:8443/",
            "http://127.0.0.1:8081/",
            "%2F%2Fevil.example",
            "%2f%2fevil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "\t//evil.example",
            " //evil.example",
            " /account",
            "/account ",
            "/\u{0}/evil.example",
            "/\u{85}/evil.example",
            "/\u{2028}/evil.example",
            "https:evil.example",
            "https:/evil.example",
            "evil.example",
            "account",
            "?return_to=//evil.example",
            "#//evil.example",
            "ftp://allowed.example/",
        ] {
            assert_eq!(parse(raw), None, "{raw:?} was accepted");
        }
        // An encoded tab is a harmless path segment on this server.
        assert_eq!(
            parse("/%09/evil.example").as_deref(),
            Some("/%09/evil.example")
        );
    }

    #[test]
    fn overlong_targets_are_refused() {
        let long = format!("/{}", "a".repeat(MAX_LEN));
        assert_eq!(parse(&long), None);
    }

    fn target_origin(t: &str) -> Option<String> {
        if t.starts_with('/') && !t.starts_with("//") {
            return Some("self".into());
        }
        Url::parse(t).ok().map(|u| u.origin().ascii_serialization())
    }

    proptest! {
        /// Whatever comes in, what goes out is a path on this server or an
        /// allowed origin, and has nothing a browser would rewrite.
        #[test]
        fn every_accepted_target_stays_on_an_allowed_origin(raw in "\\PC{0,40}|[/\\\\:a-z.@%0-9\t\n ]{0,30}") {
            if let Some(t) = parse(&raw) {
                let origin = target_origin(&t);
                prop_assert!(
                    origin.as_deref() == Some("self")
                        || origin.as_ref().is_some_and(|o| allowed().contains(o)),
                    "{raw:?} -> {t:?}"
                );
                prop_assert!(!t.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\'));
            }
        }

        /// Plain local paths, with a query, are accepted as they are (the
        /// assertion is reached on every case), and a path of an allowed
        /// origin too.
        #[test]
        fn plain_local_paths_and_allowed_urls_are_kept(
            path in "(/[a-z0-9_-]{1,10}){1,4}",
            query in "(\\?[a-z]{1,5}=[a-z0-9]{0,5})?",
        ) {
            let raw = format!("{path}{query}");
            let kept = parse(&raw);
            prop_assert_eq!(kept.as_deref(), Some(raw.as_str()));
            let absolute = format!("https://allowed.example{raw}");
            let kept = parse(&absolute);
            prop_assert_eq!(kept.as_deref(), Some(absolute.as_str()));
        }
    }
}
