//! Human units, JSON printing, tables and progress bars.

/// `println!` to stdout that does not panic when the reader has gone (`| head`, `| grep -m1`):
/// the rest of the output is dropped, and the exit code still says how the command went.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
pub(crate) use outln;

use std::fmt::Write as _;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A Unix second as RFC 3339 UTC (`2025-10-20T14:30:00Z`).
pub fn utc(ts: u64) -> String {
    i64::try_from(ts)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{ts}"))
}

/// `5400` → `1h 30m`.
pub fn human_age(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Prints one JSON document on stdout.
pub fn print_json(v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).expect("json values serialize")
    );
}

/// Progress of create, restore and verify: a bar with throughput and ETA on a terminal (with
/// the `cli-tools` feature), nothing otherwise (JSON, `-q`, stderr not a terminal).
pub struct Bar {
    #[cfg(feature = "cli-tools")]
    bar: Option<indicatif::ProgressBar>,
}

impl Bar {
    /// A bar, shown only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        #[cfg(feature = "cli-tools")]
        {
            use std::io::IsTerminal;
            let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b
            });
            Self { bar }
        }
        #[cfg(not(feature = "cli-tools"))]
        {
            let _ = enabled;
            Self {}
        }
    }
}

impl kyrodb_backup_ops::Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        #[cfg(feature = "cli-tools")]
        if let Some(b) = &self.bar {
            b.reset();
            b.set_length(total);
            b.set_message(what.to_string());
        }
        let _ = (what, total);
    }
    fn advance(&self, bytes: u64) {
        #[cfg(feature = "cli-tools")]
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
        let _ = bytes;
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        #[cfg(feature = "cli-tools")]
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Prints rows under a header: a boxed table with the `cli-tools` feature and
/// `--format table`, aligned plain text otherwise.
pub fn print_table(boxed: bool, header: &[&str], rows: &[Vec<String>]) {
    #[cfg(feature = "cli-tools")]
    if boxed {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::UTF8_FULL)
            .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
            .set_header(header.to_vec());
        for r in rows {
            t.add_row(r.clone());
        }
        outln!("{t}");
        return;
    }
    let _ = boxed;
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain(std::iter::once(header[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        outln!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1024 * 1024 * 1024), "1.0 GiB");
        assert_eq!(utc(1_760_970_600), "2025-10-20T14:30:00Z");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(5400), "1h 30m");
        assert_eq!(human_age(200_000), "2d 7h");
    }
}
