//! What the status pages share: escaping, safe external links, `<time>` elements for people,
//! links between the pages that work behind a reverse proxy under a path prefix, and the style.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

/// Escapes text for HTML content and double-quoted attributes (SVG included).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The URL when `href` is an http(s) URL (no `javascript:` from data), escaped for an attribute.
pub fn safe_href(href: Option<&str>) -> Option<String> {
    match href.and_then(|h| url::Url::parse(h).ok()) {
        Some(url) if matches!(url.scheme(), "http" | "https") => Some(escape(url.as_str())),
        _ => None,
    }
}

/// A link when `href` is an http(s) URL, the text alone otherwise.
pub fn link(href: Option<&str>, text: &str) -> String {
    match safe_href(href) {
        Some(h) => format!("<a href=\"{h}\" rel=\"noreferrer\">{}</a>", escape(text)),
        None => escape(text),
    }
}

/// An instant to the second, in UTC.
pub fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        crate::humanize::utc(at)
    )
}

/// An instant to the second, in `zone` and in UTC.
pub fn time_in(at: DateTime<Utc>, zone: Tz) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        escape(&crate::humanize::when(at, zone))
    )
}

/// Percent-encodes a path segment or a query value (everything but RFC 3986's unreserved).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where the pages' links start. Behind a reverse proxy that sends `X-Forwarded-Prefix`, links
/// are absolute under that prefix; otherwise relative to the page, so a proxy that maps
/// `/baton/` to `/` works without telling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    prefix: Option<String>,
    /// How many segments below the root the page is (`/` is 0, `/pipelines/x` is 1).
    depth: usize,
}

impl Base {
    pub fn relative(depth: usize) -> Self {
        Self {
            prefix: None,
            depth,
        }
    }

    /// The prefix from `X-Forwarded-Prefix` when it is a plain path (`/baton`, `/ops/baton/`);
    /// anything else (a scheme, `//host`, quotes, spaces) is ignored.
    pub fn from_headers(headers: &axum::http::HeaderMap, depth: usize) -> Self {
        let prefix = headers
            .get("x-forwarded-prefix")
            .and_then(|v| v.to_str().ok())
            .map(|p| p.trim().trim_end_matches('/'))
            .filter(|p| {
                p.starts_with('/')
                    && !p.starts_with("//")
                    && p.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~')
                    })
            })
            .map(str::to_string);
        match prefix {
            Some(p) => Self {
                prefix: Some(p),
                depth,
            },
            None => Self::relative(depth),
        }
    }

    /// The href of `path`, given from the root without a leading slash (`""` is the front page,
    /// `pipelines/nightly` a pipeline page), escaped for an attribute.
    pub fn href(&self, path: &str) -> String {
        let href = match &self.prefix {
            Some(p) => format!("{p}/{path}"),
            None if self.depth == 0 && path.is_empty() => "./".to_string(),
            None => format!("{}{path}", "../".repeat(self.depth)),
        };
        escape(&href)
    }

    /// The href of a pipeline's page.
    pub fn pipeline(&self, name: &str) -> String {
        self.href(&format!("pipelines/{}", encode(name)))
    }
}

/// The pages' style: state colours shared by the DAG, the grid and the Gantt.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}\
section.pipeline{border:1px solid #ccc;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}\
.dag{display:flex;gap:1.5rem;align-items:flex-start;overflow-x:auto}\
.level{display:flex;flex-direction:column;gap:.5rem}\
.step{border:1px solid #999;border-radius:4px;padding:.3rem .6rem;min-width:9rem;background:#f6f6f6}\
.step small{display:block;color:#555}\
.succeeded{background:#dff3df;border-color:#3a3}.failed,.upstream_failed{background:#fbdede;border-color:#c33}\
.running{background:#ddeeff;border-color:#36c}.waiting_retry{background:#fff2cc;border-color:#c90}\
.cancelled{background:#eee;border-color:#777}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}\
pre{margin:0;white-space:pre-wrap;max-width:60rem}\
.mark{display:inline-block;font-size:.8rem;font-weight:600;padding:0 .4rem;border-radius:3px;margin-left:.5rem}\
.mark.failed{background:#c33;color:#fff}.mark.late{background:#c90;color:#fff}\
.scroll{overflow-x:auto;max-width:100%}\
svg text{font-family:system-ui,sans-serif;font-size:12px}\
svg .node rect{fill:#f6f6f6;stroke:#999}svg .node.succeeded rect{fill:#dff3df;stroke:#3a3}\
svg .node.failed rect,svg .node.upstream_failed rect{fill:#fbdede;stroke:#c33}\
svg .node.running rect{fill:#ddeeff;stroke:#36c}svg .node.waiting_retry rect{fill:#fff2cc;stroke:#c90}\
svg .node.cancelled rect{fill:#eee;stroke:#777}svg .edge{fill:none;stroke:#777;stroke-width:1.2}\
svg .span.waiting_upstream{fill:#e4e4e4}svg .span.waiting_slot{fill:#cfcfcf}\
svg .span.queued{fill:#b9cfe8}svg .span.running{fill:#3a7bd5}svg .span.retried{fill:#d9534f}\
svg .span.waiting_retry{fill:#f0c36d}svg .critical-mark{fill:#b00}svg .axis{stroke:#bbb}\
svg .median{stroke:#36c;stroke-dasharray:3 2}svg .point{fill:#555}svg .slowest{fill:#c33}\
svg .trend-line{fill:none;stroke:#999}\
table.grid td{padding:0;border:1px solid #fff}table.grid th{font-weight:normal;font-size:.8rem}\
table.grid td a,table.grid td span{display:block;width:1.4rem;height:1.4rem}\
td.succeeded{background:#5cb85c}td.failed{background:#d9534f}td.upstream_failed{background:#f0a0a0}\
td.running{background:#3a7bd5}td.waiting_retry{background:#f0c36d}td.cancelled{background:#999}\
td.pending{background:#ddd}td.none{background:#fafafa}\
.legend span{display:inline-block;padding:0 .4rem;margin-right:.4rem;border-radius:3px}\
.legend .waiting_upstream{background:#e4e4e4}.legend .waiting_slot{background:#cfcfcf}\
.legend .queued{background:#b9cfe8}.legend .running{background:#3a7bd5;color:#fff}\
.legend .retried{background:#d9534f;color:#fff}.legend .waiting_retry{background:#f0c36d}\
.legend .critical{border:2px solid #b00}";

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(prefix: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-prefix", prefix.parse().unwrap());
        h
    }

    #[test]
    fn links_are_relative_without_a_prefix_and_under_it_with_one() {
        assert_eq!(Base::relative(0).pipeline("nightly"), "pipelines/nightly");
        assert_eq!(Base::relative(0).href(""), "./");
        assert_eq!(Base::relative(1).href(""), "../");
        assert_eq!(Base::relative(1).pipeline("a b"), "../pipelines/a%20b");
        let b = Base::from_headers(&headers("/ops/baton/"), 1);
        assert_eq!(b.pipeline("nightly"), "/ops/baton/pipelines/nightly");
        assert_eq!(b.href(""), "/ops/baton/");
    }

    #[test]
    fn a_prefix_that_is_not_a_plain_path_is_ignored() {
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/a\"b",
            "baton",
            "/a b",
        ] {
            assert_eq!(
                Base::from_headers(&headers(bad), 0),
                Base::relative(0),
                "{bad}"
            );
        }
    }

    #[test]
    fn encoding_keeps_unreserved_characters_only() {
        assert_eq!(
            encode("run@2026-01-01T00:00:00Z"),
            "run%402026-01-01T00%3A00%3A00Z"
        );
        assert_eq!(encode("<x>"), "%3Cx%3E");
    }
}
