//! The JSON Schema of the config file, generated from the serde types in `schema` (schemars).
//! The committed copy is `config/weir.schema.json`; editors find it through the
//! `# yaml-language-server: $schema=...` line of the example configs, and a test fails when the
//! committed copy differs from what the types generate.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::duration::DurationSpec;
use super::schema::ConfigSpec;

impl JsonSchema for DurationSpec {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(ms|s|m|h)$",
            "description": "A whole number and a unit: ms, s, m or h.",
            "examples": ["250ms", "15s", "2m"],
        })
    }
}

/// The config file's JSON Schema (draft 2020-12), pretty-printed with a final newline, as
/// committed in `config/weir.schema.json`.
pub fn config_schema() -> String {
    let schema = schemars::schema_for!(ConfigSpec);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}
