//! What a file really is, decided from its bytes: [`sniff`] names the type
//! from the first bytes (`infer` for binary formats; text, HTML and SVG,
//! which `infer` does not tell apart, by their markup), [`MarkupScanner`]
//! looks through the whole content of a type served inline for markup a
//! browser could run (a polyglot: a valid image that is also an HTML page),
//! and [`check_claims`] holds the client's declared type and extension to
//! what the content is.

/// How many bytes [`sniff`] wants to see (fewer for a shorter file).
pub const PREFIX: usize = 8 * 1024;

/// A sniffed type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub mime: &'static str,
    /// The extension the stored file gets.
    pub ext: &'static str,
}

/// Types a browser renders as a document that can run script: never
/// served inline, whatever the allowlist says.
const ACTIVE: &[&str] = &[
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "application/javascript",
    "text/javascript",
];

/// Types served inline (`Content-Disposition: inline`); anything else is
/// offered as a download.
const INLINE: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/avif",
    "application/pdf",
    "text/plain",
    "video/mp4",
    "video/webm",
    "audio/mpeg",
    "audio/ogg",
];

/// Extensions a type may be uploaded with, besides its own.
const ALSO: &[(&str, &[&str])] = &[
    ("image/jpeg", &["jpg", "jpeg", "jpe", "jfif"]),
    ("image/tiff", &["tif", "tiff"]),
    ("text/plain", &["txt", "text", "md", "csv", "log", "json"]),
    ("text/html", &["html", "htm"]),
    ("image/svg+xml", &["svg", "svgz"]),
    ("application/xml", &["xml"]),
];

/// Extensions that name a type (each a claim the content must match). An
/// extension not listed here says nothing, and the sniffed one is added.
const KNOWN: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "gif", "webp", "avif", "bmp", "ico", "tif", "tiff", "pdf",
    "txt", "text", "md", "csv", "log", "json", "html", "htm", "xhtml", "svg", "svgz", "xml", "js",
    "mjs", "css", "php", "exe", "dll", "sh", "bat", "cmd", "ps1", "jar", "zip", "gz", "tar", "7z",
    "rar", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "mp3", "mp4", "webm", "ogg", "wav",
    "flac", "mov", "avi", "mkv", "wasm", "swf",
];

pub fn is_active(mime: &str) -> bool {
    ACTIVE.contains(&mime)
}

pub fn is_inline(mime: &str) -> bool {
    INLINE.contains(&mime)
}

/// The type of content starting with `prefix` (the whole content when it
/// is shorter than [`PREFIX`]).
pub fn sniff(prefix: &[u8]) -> Sniffed {
    if let Some(kind) = infer::get(prefix)
        && kind.matcher_type() != infer::MatcherType::Text
    {
        return Sniffed {
            mime: kind.mime_type(),
            ext: kind.extension(),
        };
    }
    match text_of(prefix) {
        Some(text) => markup_type(text),
        None => Sniffed {
            mime: "application/octet-stream",
            ext: "bin",
        },
    }
}

/// `prefix` as text: UTF-8 (a character cut at the end is fine) without
/// NUL or control characters other than whitespace.
fn text_of(prefix: &[u8]) -> Option<&str> {
    let text = match std::str::from_utf8(prefix) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&prefix[..e.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    let plain = text
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'));
    plain.then_some(text)
}

fn markup_type(text: &str) -> Sniffed {
    let lower = text.trim_start_matches('\u{feff}').to_ascii_lowercase();
    if lower.contains("<svg") {
        Sniffed {
            mime: "image/svg+xml",
            ext: "svg",
        }
    } else if HTML_MARKERS.iter().any(|m| lower.contains(m)) {
        Sniffed {
            mime: "text/html",
            ext: "html",
        }
    } else if lower.trim_start().starts_with("<?xml") {
        Sniffed {
            mime: "application/xml",
            ext: "xml",
        }
    } else {
        Sniffed {
            mime: "text/plain",
            ext: "txt",
        }
    }
}

const HTML_MARKERS: &[&str] = &[
    "<!doctype html",
    "<html",
    "<head",
    "<body",
    "<script",
    "<iframe",
    "<object",
    "<embed",
    "<svg",
    "<?php",
];

/// Looks through content, chunk by chunk, for markup a browser would run
/// if it ever treated the file as HTML. Markers split across chunks are
/// found too.
#[derive(Debug, Default)]
pub struct MarkupScanner {
    tail: Vec<u8>,
    found: Option<&'static str>,
}

/// Longest marker, in bytes.
const MARKER_MAX: usize = 14;

impl MarkupScanner {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.found.is_some() || chunk.is_empty() {
            return;
        }
        // The seam: the last bytes of the previous chunk and the first of
        // this one.
        if !self.tail.is_empty() {
            let mut seam = std::mem::take(&mut self.tail);
            seam.extend_from_slice(&chunk[..chunk.len().min(MARKER_MAX)]);
            self.found = find_marker(&seam);
        }
        if self.found.is_none() {
            self.found = find_marker(chunk);
        }
        let keep = chunk.len().min(MARKER_MAX - 1);
        self.tail = chunk[chunk.len() - keep..].to_vec();
    }

    /// The marker found, if any.
    pub fn found(&self) -> Option<&'static str> {
        self.found
    }
}

fn find_marker(hay: &[u8]) -> Option<&'static str> {
    memchr::memchr_iter(b'<', hay).find_map(|at| {
        let rest = &hay[at..];
        HTML_MARKERS
            .iter()
            .find(|m| rest.len() >= m.len() && rest[..m.len()].eq_ignore_ascii_case(m.as_bytes()))
            .copied()
    })
}

/// Why the client's claims about a file contradict its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the file was declared as `{declared}` but its content is `{actual}`")]
    DeclaredType {
        declared: String,
        actual: &'static str,
    },
    #[error("the extension `.{ext}` does not match the content (`{actual}`)")]
    Extension { ext: String, actual: &'static str },
}

/// A declared type as the content types it may stand for.
fn normalise_declared(declared: &str) -> String {
    let base = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        "image/x-png" => "image/png".into(),
        _ => base,
    }
}

/// The extensions `mime` may be stored with.
fn extensions_of(sniffed: &Sniffed) -> Vec<&'static str> {
    let mut exts = vec![sniffed.ext];
    if let Some((_, also)) = ALSO.iter().find(|(m, _)| *m == sniffed.mime) {
        exts.extend_from_slice(also);
    }
    exts
}

/// Holds the declared type and the name's extension to the content.
/// Returns the extension the stored name should carry: the name's own when
/// it fits, else the sniffed one (to be appended).
pub fn check_claims(
    sniffed: &Sniffed,
    declared: Option<&str>,
    name_ext: Option<&str>,
) -> Result<Option<&'static str>, ClaimError> {
    if let Some(declared) = declared {
        let d = normalise_declared(declared);
        let says_nothing = d.is_empty() || d == "application/octet-stream";
        // Plain text goes by many names (text/csv, text/markdown, ...);
        // none of them may be active.
        let textual = sniffed.mime == "text/plain" && d.starts_with("text/") && !is_active(&d);
        if !says_nothing && !textual && d != sniffed.mime {
            return Err(ClaimError::DeclaredType {
                declared: d,
                actual: sniffed.mime,
            });
        }
    }
    let Some(ext) = name_ext else {
        return Ok(None);
    };
    let fits = extensions_of(sniffed);
    if fits.contains(&ext) {
        Ok(fits.into_iter().find(|e| *e == ext))
    } else if KNOWN.contains(&ext) {
        Err(ClaimError::Extension {
            ext: ext.to_owned(),
            actual: sniffed.mime,
        })
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    #[test]
    fn binary_text_and_markup_are_told_apart() {
        assert_eq!(sniff(PNG).mime, "image/png");
        assert_eq!(sniff(b"hello, world\n").mime, "text/plain");
        assert_eq!(sniff(b"  <!DOCTYPE html><p>x").mime, "text/html");
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?><svg/>").mime,
            "image/svg+xml"
        );
        assert_eq!(sniff(b"\xef\xbb\xbf<html>").mime, "text/html");
        assert_eq!(sniff(b"bin\0ary\x01").mime, "application/octet-stream");
        // A multi-byte character cut at the end of the prefix is still text.
        assert_eq!(
            sniff("caf\u{e9}".as_bytes()[..4].as_ref()).mime,
            "text/plain"
        );
    }

    #[test]
    fn markup_is_found_across_chunk_seams() {
        let mut s = MarkupScanner::default();
        s.feed(PNG);
        s.feed(b"...<scr");
        assert_eq!(s.found(), None);
        s.feed(b"IPT>alert(1)");
        assert_eq!(s.found(), Some("<script"));
        let mut clean = MarkupScanner::default();
        clean.feed(b"a < b and <p> is fine");
        assert_eq!(clean.found(), None);
    }

    #[test]
    fn claims_must_match_the_content() {
        let png = sniff(PNG);
        assert_eq!(
            check_claims(&png, Some("image/png"), Some("png")),
            Ok(Some("png"))
        );
        assert_eq!(
            check_claims(&png, Some("application/octet-stream"), None),
            Ok(None)
        );
        assert!(matches!(
            check_claims(&png, Some("text/html"), None),
            Err(ClaimError::DeclaredType { .. })
        ));
        assert!(matches!(
            check_claims(&png, None, Some("html")),
            Err(ClaimError::Extension { .. })
        ));
        // An extension that names no type says nothing.
        assert_eq!(check_claims(&png, None, Some("v2")), Ok(None));
        let html = sniff(b"<html><script>x</script>");
        assert!(check_claims(&html, Some("image/png"), Some("png")).is_err());
        let text = sniff(b"a,b\n1,2\n");
        assert_eq!(
            check_claims(&text, Some("text/csv"), Some("csv")),
            Ok(Some("csv"))
        );
        assert!(check_claims(&text, Some("text/html"), None).is_err());
        let jpeg = Sniffed {
            mime: "image/jpeg",
            ext: "jpg",
        };
        assert_eq!(
            check_claims(&jpeg, Some("image/jpg"), Some("jpeg")),
            Ok(Some("jpeg"))
        );
    }
}
