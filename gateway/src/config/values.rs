//! How a setting's text becomes a typed value, and how a value reads back in `--help`.
//!
//! Parsers that take bounds or wrap another parser return the parser itself, so a row of the
//! settings table reads as `number_in(1, 5)` or `unless_off(duration)`.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A value as `--help` shows it as a default.
pub(super) trait Shown {
    fn shown(&self) -> String;
}

macro_rules! shown_as_displayed {
    ($($kind:ty),*) => {
        $(impl Shown for $kind {
            fn shown(&self) -> String {
                self.to_string()
            }
        })*
    };
}

shown_as_displayed!(SocketAddr, String, usize, u32, u64, i32, i64);

impl Shown for Duration {
    fn shown(&self) -> String {
        humantime::format_duration(*self).to_string()
    }
}

impl Shown for bool {
    fn shown(&self) -> String {
        if *self { "on" } else { "off" }.to_owned()
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> String {
        self.join(",")
    }
}

pub(super) fn shown<T: Shown>(value: &T) -> String {
    value.shown()
}

/// Shows an optional value, or `unset` for what its absence means.
pub(super) fn or<T: Shown>(unset: &'static str) -> impl Fn(&Option<T>) -> String {
    move |value| {
        value
            .as_ref()
            .map_or_else(|| unset.to_owned(), Shown::shown)
    }
}

/// Whether a secret is set, never the secret.
pub(super) fn hidden(secret: &Option<String>) -> String {
    if secret.is_some() { "set" } else { "none" }.to_owned()
}

/// A value chosen by name, such as `jwt` or `json`; the names parse and show it alike.
pub(super) trait Named: Copy + PartialEq + 'static {
    const NAMES: &'static [(&'static str, Self)];
}

pub(super) fn named<T: Named>(raw: &str) -> Result<T, String> {
    match T::NAMES.iter().find(|(name, _)| *name == raw) {
        Some((_, value)) => Ok(*value),
        None => {
            let names: Vec<String> = T::NAMES
                .iter()
                .map(|(name, _)| format!("`{name}`"))
                .collect();
            Err(format!("expected {}, got `{raw}`", names.join(" or ")))
        }
    }
}

pub(super) fn name_of<T: Named>(value: &T) -> String {
    T::NAMES
        .iter()
        .find(|(_, named)| named == value)
        .map_or_else(String::new, |(name, _)| (*name).to_owned())
}

/// `on` or `off`, with the spellings a shell or compose file tends to use.
pub(super) fn switch(raw: &str) -> Result<bool, String> {
    match raw {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("expected `on` or `off`, got `{raw}`")),
    }
}

pub(super) fn text(raw: &str) -> Result<String, String> {
    Ok(raw.to_owned())
}

pub(super) fn path(raw: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(raw))
}

pub(super) fn address(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|err| format!("{err}: `{raw}`"))
}

/// Console logins are signed with it, so it must not be guessable.
pub(super) fn secret(raw: &str) -> Result<String, String> {
    if raw.len() < 32 {
        return Err("use at least 32 characters".into());
    }
    Ok(raw.to_owned())
}

pub(super) fn url_list(raw: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err("expected one or more comma-separated NATS URLs".to_owned());
    }
    for url in &urls {
        crate::nats::check_server_url(url).map_err(|err| format!("`{url}`: {err}"))?;
    }
    Ok(urls)
}

/// JetStream stream and bucket names: letters, digits, `-` and `_`.
pub(super) fn name(raw: &str) -> Result<String, String> {
    if raw.is_empty() || !raw.bytes().all(name_byte) {
        return Err(format!(
            "`{raw}` is not a valid JetStream name (letters, digits, - and _)"
        ));
    }
    Ok(raw.to_owned())
}

pub(super) fn subject_prefix(raw: &str) -> Result<String, String> {
    let valid = raw
        .split('.')
        .all(|token| !token.is_empty() && token.bytes().all(name_byte));
    if !valid {
        return Err(format!(
            "`{raw}` is not a valid subject prefix (dot-separated tokens)"
        ));
    }
    Ok(raw.to_owned())
}

fn name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

pub(super) fn number_in<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    move |raw| match raw.parse::<T>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        _ => Err(format!(
            "expected an integer from {min} to {max}, got `{raw}`"
        )),
    }
}

pub(super) fn duration(raw: &str) -> Result<Duration, String> {
    match humantime::parse_duration(raw) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!(
            "expected a duration such as `500ms`, `5s` or `2m`, got `{raw}`"
        )),
    }
}

/// Empty means unset, so a blank variable in a compose file or unit changes nothing.
pub(super) fn optional<T>(
    parse: impl Fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<Option<T>, String> {
    move |raw| {
        if raw.is_empty() {
            Ok(None)
        } else {
            parse(raw).map(Some)
        }
    }
}

/// `off` (or empty) for no limit, else a value `parse` accepts.
pub(super) fn unless_off<T>(
    parse: impl Fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<Option<T>, String> {
    move |raw| {
        if raw.eq_ignore_ascii_case("off") {
            Ok(None)
        } else {
            optional(&parse)(raw)
        }
    }
}
