//! Where each setting came from, said in words an operator can act on: "the environment
//! variable OPENPACS_DICOM_PORT", "the configuration file /etc/openpacs/openpacs.toml", "the
//! command line (--dicom-addr)", never figment's provider names (Rust type paths and source
//! locations).

use figment::error::{Actual, Kind};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Serialize;

const DEFAULTS: &str = "the built-in defaults";
const COMMAND_LINE: &str = "the command line";

/// A serialised value (the defaults or the command-line flags) under a name in words.
pub struct Named<T> {
    name: &'static str,
    value: T,
}

impl<T> Named<T> {
    pub fn defaults(value: T) -> Self {
        Named {
            name: DEFAULTS,
            value,
        }
    }

    pub fn command_line(value: T) -> Self {
        Named {
            name: COMMAND_LINE,
            value,
        }
    }
}

impl<T: Serialize> Provider for Named<T> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.value).data()
    }
}

/// Where `key` (a top-level setting) got its value.
pub fn origin(figment: &Figment, key: &str) -> String {
    figment
        .find_metadata(key)
        .map(|m| in_words(m, key))
        .unwrap_or_else(|| DEFAULTS.into())
}

fn in_words(metadata: &Metadata, key: &str) -> String {
    if metadata.name == COMMAND_LINE {
        return format!("{COMMAND_LINE} (--{})", key.replace('_', "-"));
    }
    if metadata.name.contains("environment") {
        // Nested keys come from `OPENPACS_PARENT__CHILD` (see `config::load`).
        return format!(
            "the environment variable OPENPACS_{}",
            key.replace('.', "__").to_uppercase()
        );
    }
    match &metadata.source {
        Some(Source::File(path)) => format!("the configuration file {}", path.display()),
        _ => metadata.name.to_string(),
    }
}

/// Every error of a failed extraction, one per line: the setting, the value found, what was
/// expected, and where the value came from.
pub fn explain(errors: figment::Error) -> String {
    let mut msg = String::from("invalid configuration");
    for err in errors {
        let key = err.path.join(".").to_lowercase();
        let from = err
            .metadata
            .as_ref()
            .map(|m| in_words(m, &key))
            .unwrap_or_else(|| "an unknown source".into());
        let what = match &err.kind {
            Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
                format!("{} is not {}", found(actual), expected_in_words(expected))
            }
            Kind::UnknownField(field, _) => {
                format!("{field:?} is not a setting (the README's settings table lists them)")
            }
            Kind::MissingField(field) => format!("{field} is missing"),
            other => other.to_string(),
        };
        if key.is_empty() {
            msg.push_str(&format!("\n  {what} (in {from})"));
        } else {
            msg.push_str(&format!("\n  {key}: {what} (from {from})"));
        }
    }
    msg
}

fn found(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("the text {s:?}"),
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Bool(b) => format!("the value {b}"),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        other => other.to_string(),
    }
}

/// serde's expectations ("u16", "a boolean") as an operator would read them.
fn expected_in_words(expected: &str) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".into(),
        "u16" => "a whole number from 0 to 65535".into(),
        "u32" => "a whole number from 0 to 4294967295".into(),
        "u64" | "usize" => "a whole number (0 or more)".into(),
        "i64" | "i32" => "a whole number".into(),
        "a boolean" => "true or false".into(),
        "a string" => "a text value in quotes".into(),
        "IP address" => "an IP address such as 127.0.0.1 or ::1".into(),
        "a sequence" => "a list such as [\"A\", \"B\"]".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        port: u16,
        open: bool,
    }

    #[derive(Serialize)]
    struct Flags {
        port: u16,
    }

    #[test]
    fn errors_name_the_setting_the_value_and_the_file_in_words() {
        let explained = |toml: &str| {
            let figment = Figment::new().merge(Toml::string(toml));
            explain(figment.extract::<Settings>().unwrap_err())
        };
        let text = explained("port = \"x\"\nopen = true\n");
        assert!(
            text.contains("port: the text \"x\" is not a whole number from 0 to 65535"),
            "{text}"
        );
        assert!(!text.contains("u16"), "{text}");
        let text = explained("port = 1\nopen = 3\n");
        assert!(text.contains("open: the number 3 is not true or false"), "{text}");
    }

    #[test]
    fn the_command_line_and_the_defaults_are_named_in_words() {
        let figment =
            Figment::from(Named::defaults(Flags { port: 1 })).merge(Named::command_line(Flags { port: 2 }));
        assert_eq!(
            origin(&figment, "port"),
            "the command line (--port)",
            "the flag, not a Rust type or source location"
        );
        let defaults = Figment::from(Named::defaults(Flags { port: 1 }));
        assert_eq!(origin(&defaults, "port"), "the built-in defaults");
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Nested {
        tls: Tls,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Tls {
        port: u16,
    }

    #[test]
    // figment::Jail's closure must return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn a_nested_setting_names_its_environment_variable_as_it_is_spelt() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OPENPACS_TLS__PORT", "many");
            let figment = Figment::new().merge(figment::providers::Env::prefixed("OPENPACS_").split("__"));
            let text = explain(figment.extract::<Nested>().unwrap_err());
            assert!(
                text.contains("(from the environment variable OPENPACS_TLS__PORT)"),
                "{text}"
            );
            Ok(())
        });
    }
}
