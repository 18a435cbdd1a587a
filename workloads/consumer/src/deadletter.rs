//! The dead-letter record: a change-topic record the consumer could not apply,
//! with the reason and its source coordinates, so an operator can find it,
//! fix the cause and replay it. Key and payload travel as text when they are
//! UTF-8 and as base64 otherwise, so no byte is lost. Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The JSON value written to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why the record was not applied.
    pub reason: String,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The record key as text, when it is UTF-8.
    pub key: Option<String>,
    /// The record key as base64, when it is not UTF-8.
    pub key_base64: Option<String>,
    /// The record value as text, when it is UTF-8.
    pub payload: Option<String>,
    /// The record value as base64, when it is not UTF-8.
    pub payload_base64: Option<String>,
    /// The consumer group that rejected it.
    pub group: String,
}

fn split(bytes: Option<&[u8]>) -> (Option<String>, Option<String>) {
    match bytes {
        None => (None, None),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(STANDARD.encode(b))),
        },
    }
}

impl DeadLetter {
    /// A dead letter for the record at `topic`/`partition`/`offset`.
    pub fn new(
        reason: String,
        (topic, partition, offset): (&str, i32, i64),
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        group: &str,
    ) -> Self {
        let (key, key_base64) = split(key);
        let (payload, payload_base64) = split(payload);
        Self {
            reason,
            topic: topic.to_string(),
            partition,
            offset,
            key,
            key_base64,
            payload,
            payload_base64,
            group: group.to_string(),
        }
    }

    /// The original key bytes (the dead-letter record is keyed by them).
    pub fn raw_key(&self) -> Option<Vec<u8>> {
        match (&self.key, &self.key_base64) {
            (Some(k), _) => Some(k.clone().into_bytes()),
            (None, Some(b)) => STANDARD.decode(b).ok(),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_as_text_and_bytes_as_base64() {
        let d = DeadLetter::new(
            "bad".into(),
            ("t", 2, 40),
            Some(br#"{"id":1}"#),
            Some(&[0xff, 0x00]),
            "g",
        );
        assert_eq!(d.key.as_deref(), Some(r#"{"id":1}"#));
        assert_eq!(d.payload, None);
        assert_eq!(d.payload_base64.as_deref(), Some("/wA="));
        assert_eq!(d.raw_key(), Some(br#"{"id":1}"#.to_vec()));
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(j["offset"], 40);
        assert_eq!(j["reason"], "bad");
    }
}
