//! The kernel command line (`extra=` in the xl config).
//!
//! Options are whitespace-separated `key=value` or bare `key` words; ballast
//! reads the ones under `ballast.` and ignores the rest.

/// Options ballast understands.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// `ballast.panic=1`: panic right after the banner (tests the crash path).
    pub panic_on_boot: bool,
}

impl Options {
    pub fn parse(line: &str) -> Self {
        let mut opts = Options::default();
        for word in line.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            match key {
                "ballast.panic" => opts.panic_on_boot = flag(value),
                _ => {}
            }
        }
        opts
    }
}

/// A bare key, or `1`, `y`, `yes`, `on`, `true`, turns a switch on.
fn flag(value: Option<&str>) -> bool {
    matches!(value, None | Some("1" | "y" | "yes" | "on" | "true"))
}

/// The command line as text: up to the first NUL, invalid UTF-8 cut off.
pub fn as_text(raw: &[u8]) -> &str {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match core::str::from_utf8(&raw[..len]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_switch() {
        assert!(Options::parse("quiet ballast.panic=1").panic_on_boot);
        assert!(Options::parse("ballast.panic").panic_on_boot);
        assert!(!Options::parse("ballast.panic=0").panic_on_boot);
        assert!(!Options::parse("").panic_on_boot);
    }

    #[test]
    fn text_stops_at_nul_and_bad_utf8() {
        assert_eq!(as_text(b"a b\0junk"), "a b");
        assert_eq!(as_text(b"ok\xffrest"), "ok");
    }
}
