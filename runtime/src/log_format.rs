//! The JSON log line, written by hand: the bytes of tracing-subscriber's
//! `json().flatten_event(true).with_current_span(false)` format without a target, for a fraction
//! of the work.
//!
//! The stock format serializes each field through serde into a `fmt::Write` adaptor that
//! UTF-8-checks every fragment it is handed (a hundred per request line) and formats the
//! timestamp's date anew for every line; that was two thirds of what a cache hit cost the agent.
//! [`JsonLines`] writes the same object into one reused buffer: strings are escaped as serde_json
//! escapes them, numbers go through serde_json, `Debug` and `Display` values are escaped as they
//! are formatted, and the date part of the timestamp is formatted once a second per thread. An
//! event inside a span goes to the stock format, which adds the span list; our servers log none
//! themselves, but their libraries may.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::SystemTime as StockTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format of every binary; see the module documentation.
#[derive(Debug)]
pub struct JsonLines {
    stock: Format<Json, StockTime>,
}

impl Default for JsonLines {
    fn default() -> Self {
        Self {
            stock: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_target(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.parent().is_some() || ctx.lookup_current().is_some() {
            return self.stock.format_event(ctx, writer, event);
        }
        let Some(now) = Micros::now() else {
            // A clock before 1970: let the stock format deal with it.
            return self.stock.format_event(ctx, writer, event);
        };
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => line.render(now, event, &mut writer),
            // An event logged while formatting another on this thread: a fresh buffer.
            Err(_) => Line::new().render(now, event, &mut writer),
        })
    }
}

thread_local! {
    /// This thread's line buffer, reused for every line it logs.
    static LINE: RefCell<Line> = const { RefCell::new(Line::new()) };
}

/// Wall-clock time in whole microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Micros {
    secs: u64,
    micros: u32,
}

impl Micros {
    fn now() -> Option<Self> {
        Self::of(SystemTime::now())
    }

    fn of(t: SystemTime) -> Option<Self> {
        let d = t.duration_since(UNIX_EPOCH).ok()?;
        Some(Self {
            secs: d.as_secs(),
            micros: d.subsec_micros(),
        })
    }
}

/// A thread's line buffer and the date part of its last timestamp.
struct Line {
    out: String,
    /// `YYYY-MM-DDTHH:MM:SS.` of second `second`.
    date: String,
    second: Option<u64>,
}

impl Line {
    const fn new() -> Self {
        Self {
            out: String::new(),
            date: String::new(),
            second: None,
        }
    }

    fn render(&mut self, now: Micros, event: &Event<'_>, writer: &mut Writer<'_>) -> fmt::Result {
        self.head(now, event.metadata().level())?;
        event.record(&mut Fields { out: &mut self.out });
        self.out.push_str("}\n");
        writer.write_str(&self.out)
    }

    /// Start a line: `{"timestamp":"…","level":"…"`.
    fn head(&mut self, now: Micros, level_: &Level) -> fmt::Result {
        self.out.clear();
        self.out.push_str("{\"timestamp\":\"");
        self.timestamp(now)?;
        self.out.push_str("\",\"level\":\"");
        self.out.push_str(level(level_));
        self.out.push('"');
        Ok(())
    }

    /// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` in UTC, as tracing-subscriber's `SystemTime` prints it.
    fn timestamp(&mut self, now: Micros) -> fmt::Result {
        if self.second != Some(now.secs) {
            let secs = i64::try_from(now.secs).map_err(|_| fmt::Error)?;
            let ts = jiff::Timestamp::from_second(secs).map_err(|_| fmt::Error)?;
            let dt = jiff::tz::Offset::UTC.to_datetime(ts);
            self.date.clear();
            write!(
                self.date,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                dt.year(),
                dt.month(),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            )?;
            self.second = Some(now.secs);
        }
        self.out.push_str(&self.date);
        let mut digits = [b'0'; 6];
        let mut rest = now.micros;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        // Six ASCII digits.
        self.out
            .push_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?);
        self.out.push('Z');
        Ok(())
    }
}

/// A JSON line built without tracing's field visitor, for a hot path that logs one fixed shape
/// per request: the same bytes [`JsonLines`] writes for an event with these fields, in this order,
/// outside any span. Keys are literals and are not escaped; values are.
#[derive(Debug)]
pub struct DirectLine<'a> {
    out: &'a mut String,
}

impl DirectLine<'_> {
    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        push_json_str(self.out, value);
        self
    }

    pub fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// As serde_json writes it (`null` for NaN and infinities).
    pub fn f64(&mut self, key: &'static str, value: f64) -> &mut Self {
        self.key(key);
        push_number(self.out, value);
        self
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(!needs_escape(key.as_bytes()), "{key:?}");
        self.out.push_str(",\"");
        self.out.push_str(key);
        self.out.push_str("\":");
    }
}

/// Build one line at `level` with `fill` and hand it, newline included, to `write`. The line is
/// built in this thread's reused buffer; `fill` must not log. False, with nothing written, when
/// the clock is before 1970 (the stock format deals with that).
pub fn direct_line(
    level: &Level,
    fill: impl FnOnce(&mut DirectLine<'_>),
    write: impl FnOnce(&str),
) -> bool {
    let Some(now) = Micros::now() else {
        return false;
    };
    let build = |line: &mut Line| {
        if line.head(now, level).is_err() {
            return false;
        }
        fill(&mut DirectLine { out: &mut line.out });
        line.out.push_str("}\n");
        write(&line.out);
        true
    };
    LINE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut line) => build(&mut line),
        // A line built while another is on this thread: a fresh buffer.
        Err(_) => build(&mut Line::new()),
    })
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// Appends `,"name":value` for each field, in the order the event records them.
struct Fields<'a> {
    out: &'a mut String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.out.push(',');
        push_json_str(self.out, field.name());
        self.out.push(':');
    }

    /// A number exactly as serde_json writes it (`null` for NaN and infinities).
    fn number<T: serde::Serialize>(&mut self, field: &Field, value: T) {
        self.key(field);
        push_number(self.out, value);
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.out.push('"');
        // Writing into a String cannot fail; a failing Debug impl leaves what it wrote.
        let _ = write!(Escaped(self.out), "{value:?}");
        self.out.push('"');
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.out, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }
}

/// A number exactly as serde_json writes it (`null` for NaN and infinities).
fn push_number<T: serde::Serialize>(out: &mut String, value: T) {
    // The longest f64 serde_json writes, `-1.7976931348623157e308`, is 23 bytes.
    let mut buf = [0u8; 32];
    let mut rest = &mut buf[..];
    let text = serde_json::to_writer(&mut rest, &value)
        .ok()
        .map(|()| 32 - rest.len())
        .and_then(|n| std::str::from_utf8(&buf[..n]).ok());
    out.push_str(text.unwrap_or("null"));
}

/// `value` as a JSON string, quotes included.
fn push_json_str(out: &mut String, value: &str) {
    out.push('"');
    escape_into(out, value);
    out.push('"');
}

/// The inside of a JSON string, escaped as serde_json escapes: `"`, `\` and control characters;
/// everything else, non-ASCII included, as is. A string with nothing to escape (nearly all) is
/// checked eight bytes at a time and copied whole.
fn escape_into(out: &mut String, value: &str) {
    if !needs_escape(value.as_bytes()) {
        out.push_str(value);
        return;
    }
    let mut plain = 0;
    for (i, b) in value.bytes().enumerate() {
        let Some(escape) = escape_of(b) else {
            continue;
        };
        // `b` is ASCII, so `i` is a character boundary.
        out.push_str(&value[plain..i]);
        match escape {
            Escape::Short(s) => out.push_str(s),
            Escape::Unicode => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        plain = i + 1;
    }
    out.push_str(&value[plain..]);
}

/// Whether any byte of `bytes` is below 0x20, `"` or `\`: eight bytes at a time, the rest one by
/// one. (Copying each chunk into a padded array instead made this a third of a log line's cost.)
fn needs_escape(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let words = chunks.by_ref().any(|chunk| {
        <[u8; 8]>::try_from(chunk).is_ok_and(|w| any_needs_escape(u64::from_le_bytes(w)))
    });
    words
        || chunks
            .remainder()
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\` (exact as a whole, not as to
/// which byte).
fn any_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of a byte is set where that byte is below `n`, or after such a byte.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    (below(w, 0x20) | below(quote, 1) | below(backslash, 1)) & HIGHS != 0
}

enum Escape {
    Short(&'static str),
    /// `\u00XX`
    Unicode,
}

fn escape_of(b: u8) -> Option<Escape> {
    Some(match b {
        b'"' => Escape::Short("\\\""),
        b'\\' => Escape::Short("\\\\"),
        b'\n' => Escape::Short("\\n"),
        b'\r' => Escape::Short("\\r"),
        b'\t' => Escape::Short("\\t"),
        0x08 => Escape::Short("\\b"),
        0x0c => Escape::Short("\\f"),
        0x00..=0x1f => Escape::Unicode,
        _ => return None,
    })
}

/// Escapes what is formatted into it.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use super::*;

    /// Every kind of field, and events inside and outside spans.
    fn emit() {
        let err = io::Error::other("disk \"full\"");
        tracing::info!(
            s = "quote \" backslash \\ controls \u{1}\u{8}\u{c}\u{1f}\u{7f} \n\r\t é 雪",
            n = 5u64,
            i = -3i64,
            big = u128::MAX,
            f = 0.125f64,
            whole = 1.0f64,
            tiny = 1e-7f64,
            nan = f64::NAN,
            inf = f64::INFINITY,
            b = true,
            d = ?vec!["w\"x"],
            p = %"shown\n",
            e = &err as &dyn std::error::Error,
            k8s.namespace = "dotted",
            r#type = "raw",
            "message {} {:?}",
            42,
            "q\""
        );
        tracing::warn!("plain");
        tracing::error!(empty = "", "");
        tracing::debug!(n = 0u64);
        let span = tracing::info_span!("req", k = 1);
        {
            let _in = span.enter();
            tracing::info!(x = 1, "in a span");
        }
        tracing::info!(parent: &span, "explicit parent");
        tracing::info!(parent: None, "root");
    }

    /// The lines `emit` logs through `format`, each without its timestamp (checked apart).
    fn lines(ours: bool) -> Vec<String> {
        let file = tempfile::NamedTempFile::new().unwrap();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(Mutex::new(file.reopen().unwrap()))
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(false);
        if ours {
            let subscriber = builder.event_format(JsonLines::default()).finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| {
                let rest = l.strip_prefix("{\"timestamp\":\"").expect(l);
                let (ts, rest) = rest.split_once('"').expect(l);
                assert_eq!(ts.len(), "2026-11-26T18:46:35.123456Z".len(), "{l}");
                assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{l}");
                rest.to_string()
            })
            .collect()
    }

    #[test]
    fn lines_are_the_stock_json_lines_byte_for_byte() {
        let stock = lines(false);
        assert_eq!(stock.len(), 7);
        assert!(stock[4].contains("\"spans\""), "{}", stock[4]);
        let ours = lines(true);
        for (a, b) in ours.iter().zip(&stock) {
            assert_eq!(a, b);
        }
        assert_eq!(ours.len(), stock.len());
    }

    #[test]
    fn escapes_every_byte_as_serde_json_does() {
        let all: String = (0u8..=0x7f).map(char::from).chain("é雪".chars()).collect();
        for start in 0..16 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, all.len()] {
                let Some(s) = all.get(start..(start + len).min(all.len())) else {
                    continue;
                };
                let mut ours = String::new();
                push_json_str(&mut ours, s);
                assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
            }
        }
        let mut ours = String::new();
        push_json_str(&mut ours, "plain-ascii-and-more-than-eight-bytes\"\u{1}");
        assert_eq!(ours, r#""plain-ascii-and-more-than-eight-bytes\"\u0001""#);
    }

    #[test]
    fn timestamps_are_rfc3339_micros_in_utc() {
        let mut line = Line::new();
        let at = |secs: u64, micros: u32| Micros { secs, micros };
        for (t, want) in [
            (at(0, 0), "1970-01-01T00:00:00.000000Z"),
            (at(1_795_712_795, 7), "2026-11-26T17:06:35.000007Z"),
            (at(1_795_712_795, 999_999), "2026-11-26T17:06:35.999999Z"),
            (at(1_795_712_796, 120_000), "2026-11-26T17:06:36.120000Z"),
            (at(951_782_400, 1), "2000-02-29T00:00:00.000001Z"),
        ] {
            line.out.clear();
            line.timestamp(t).unwrap();
            assert_eq!(line.out, want);
        }
        assert!(Micros::of(UNIX_EPOCH - std::time::Duration::from_secs(1)).is_none());
    }
}
