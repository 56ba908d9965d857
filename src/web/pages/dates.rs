//! Times as the reader writes them, for every page area: `30 Nov 2026, 13:08 UTC` in English,
//! `2026年11月30日 13:08（UTC）` in Chinese, each inside `<time datetime="RFC 3339">` so that a
//! machine (or a screen reader's date handling) still has the exact instant.
//!
//! The zone is stated and is UTC: the gateway's configuration names no zone for its readers and
//! the browser's is not sent to the server (a page must work without script), so a local time
//! guessed from the language (Beijing for Chinese) could be wrong for the reader and silently so.
//! Templates use the `when` filter; Rust code that needs the text uses [`text`].

use minijinja::{State, Value};

use super::Lang;

/// The reader's form of a time given as RFC 3339 text or as integer microseconds since the
/// epoch (how storage keeps them). `None` when it is neither.
fn instant(v: &Value) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Some(s) = v.as_str() {
        return time::OffsetDateTime::parse(s, &Rfc3339).ok();
    }
    let micros = i64::try_from(v.clone()).ok()?;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The text a reader sees for an instant, in UTC.
fn written(lang: Lang, t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (h, m) = (t.hour(), t.minute());
    match lang {
        Lang::En => format!(
            "{} {} {}, {h:02}:{m:02} UTC",
            t.day(),
            MONTHS[usize::from(u8::from(t.month())) - 1],
            t.year()
        ),
        Lang::ZhCn => format!(
            "{}年{}月{}日 {h:02}:{m:02}（UTC）",
            t.year(),
            u8::from(t.month()),
            t.day()
        ),
    }
}

/// A calendar date (`2021-07-20`, as the stores write days) as the reader writes it; no time
/// and no zone, since a day is not an instant.
fn day(lang: Lang, d: time::Date) -> String {
    match lang {
        Lang::En => format!(
            "{} {} {}",
            d.day(),
            MONTHS[usize::from(u8::from(d.month())) - 1],
            d.year()
        ),
        Lang::ZhCn => format!("{}年{}月{}日", d.year(), u8::from(d.month()), d.day()),
    }
}

/// `YYYY-MM-DD` exactly, else `None`.
fn date_only(s: &str) -> Option<time::Date> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    (s.len() == 10)
        .then(|| time::Date::parse(s, &f).ok())
        .flatten()
}

/// The machine form for `datetime=`: RFC 3339 in UTC, whole seconds.
fn machine(t: time::OffsetDateTime) -> String {
    use time::format_description::well_known::Rfc3339;
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// The reader's text for an RFC 3339 time; a value that does not parse is returned as it is
/// (and escaped by the template like any other text).
#[cfg(test)]
fn text(lang: Lang, rfc3339: &str) -> String {
    match instant(&Value::from(rfc3339)) {
        Some(t) => written(lang, t),
        None => rfc3339.to_owned(),
    }
}

/// The month of an RFC 3339 time as the reader writes it (`Nov 2026`, `2026年11月`), in
/// UTC: the access chart's groups. `None` when it does not parse.
pub fn month(lang: Lang, rfc3339: &str) -> Option<String> {
    let t = instant(&Value::from(rfc3339))?.to_offset(time::UtcOffset::UTC);
    let m = u8::from(t.month());
    Some(match lang {
        Lang::En => format!("{} {}", MONTHS[usize::from(m) - 1], t.year()),
        Lang::ZhCn => format!("{}年{m}月", t.year()),
    })
}

/// `{{ x | when }}`: `<time datetime="...">reader's text</time>`; nothing (none, "") draws as
/// `—`, and a value that is not a time as escaped text, so a template never fails on one.
pub fn filter(state: &State, v: Value) -> Value {
    let lang = state
        .lookup("lang")
        .and_then(|v| v.as_str().and_then(Lang::parse))
        .unwrap_or(Lang::En);
    if v.is_none() || v.is_undefined() || v.as_str() == Some("") {
        return Value::from("—");
    }
    if let Some(d) = v.as_str().and_then(date_only) {
        return Value::from_safe_string(format!(
            "<time datetime=\"{}\">{}</time>",
            v.as_str().unwrap_or_default(),
            day(lang, d)
        ));
    }
    match instant(&v) {
        Some(t) => Value::from_safe_string(format!(
            "<time datetime=\"{}\">{}</time>",
            machine(t),
            written(lang, t)
        )),
        None => Value::from(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::{Environment, context};

    fn render(lang: &str, v: Value) -> String {
        let mut env = Environment::new();
        env.add_filter("when", filter);
        env.add_template("t.html", "{{ v | when }}").unwrap();
        let t = env.get_template("t.html").unwrap();
        t.render(context! { lang, v }).unwrap()
    }

    #[test]
    fn english_readers_get_day_month_year_and_the_zone() {
        assert_eq!(
            text(Lang::En, "2026-11-30T13:08:05Z"),
            "30 Nov 2026, 13:08 UTC"
        );
        assert_eq!(
            text(Lang::En, "2026-01-02T01:02:03+08:00"),
            "1 Jan 2026, 17:02 UTC",
            "another offset is brought to UTC"
        );
    }

    #[test]
    fn chinese_readers_get_year_month_day_and_the_zone() {
        assert_eq!(
            text(Lang::ZhCn, "2026-11-30T13:08:05Z"),
            "2026年11月30日 13:08（UTC）"
        );
    }

    #[test]
    fn the_filter_wraps_the_text_in_a_machine_readable_time() {
        let t = Value::from("2026-11-30T13:08:05.123456Z");
        assert_eq!(
            render("en", t.clone()),
            "<time datetime=\"2026-11-30T13:08:05Z\">30 Nov 2026, 13:08 UTC</time>"
        );
        assert_eq!(
            render("zh-CN", t),
            "<time datetime=\"2026-11-30T13:08:05Z\">2026年11月30日 13:08（UTC）</time>"
        );
        let micros = 1_796_044_085_000_000i64; // 2026-11-30T13:08:05Z
        assert_eq!(
            render("en", Value::from(micros)),
            "<time datetime=\"2026-11-30T13:08:05Z\">30 Nov 2026, 13:08 UTC</time>",
            "storage's microseconds too"
        );
    }

    #[test]
    fn days_are_written_without_a_time() {
        assert_eq!(
            render("en", Value::from("2021-07-20")),
            "<time datetime=\"2021-07-20\">20 Jul 2021</time>"
        );
        assert_eq!(
            render("zh-CN", Value::from("2021-07-20")),
            "<time datetime=\"2021-07-20\">2021年7月20日</time>"
        );
        assert_eq!(render("en", Value::from("2021-13-40")), "2021-13-40");
        assert_eq!(render("en", Value::from("6448000000")), "6448000000");
    }

    #[test]
    fn months_for_the_chart() {
        assert_eq!(month(Lang::En, "2026-11-30T13:08:05Z").unwrap(), "Nov 2026");
        assert_eq!(
            month(Lang::ZhCn, "2026-11-30T13:08:05Z").unwrap(),
            "2026年11月"
        );
        assert_eq!(month(Lang::En, "bad"), None);
    }

    #[test]
    fn nothing_and_non_times_never_break_a_page() {
        assert_eq!(render("en", Value::from(())), "—");
        assert_eq!(render("en", Value::from("")), "—");
        assert_eq!(
            render("en", Value::from("<b>")),
            "&lt;b&gt;",
            "left as it is, escaped"
        );
        assert_eq!(text(Lang::ZhCn, "tomorrow"), "tomorrow");
    }
}
