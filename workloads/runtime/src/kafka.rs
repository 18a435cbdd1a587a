//! Kafka connection flags shared by every binary that talks to Kafka. They
//! yield plain `librdkafka` property pairs, so this crate needs no Kafka client:
//! each binary feeds them into its own `rdkafka::ClientConfig`.

/// Where Kafka is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    #[arg(
        long,
        env = "PAYSTREAM_KAFKA_BOOTSTRAP",
        default_value = "127.0.0.1:19092"
    )]
    pub kafka_bootstrap: String,
    /// Security protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(
        long,
        env = "PAYSTREAM_KAFKA_SECURITY_PROTOCOL",
        default_value = "plaintext"
    )]
    pub kafka_security_protocol: String,
    /// SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) when SASL is used.
    #[arg(long, env = "PAYSTREAM_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, env = "PAYSTREAM_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password.
    #[arg(long, env = "PAYSTREAM_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
    /// CA bundle (PEM) that signed the brokers' certificates, for TLS.
    #[arg(long, env = "PAYSTREAM_KAFKA_CA")]
    pub kafka_ca: Option<String>,
    /// Extra librdkafka properties, `key=value`, repeatable.
    #[arg(long = "kafka-property", value_parser = parse_pair)]
    pub kafka_properties: Vec<(String, String)>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

impl KafkaArgs {
    /// The librdkafka properties these flags describe.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![
            (
                "bootstrap.servers".to_string(),
                self.kafka_bootstrap.clone(),
            ),
            (
                "security.protocol".to_string(),
                self.kafka_security_protocol.clone(),
            ),
            // librdkafka's default grows to 10 s: a broker back from a
            // restart would wait that long to be used again. Overridable.
            ("reconnect.backoff.max.ms".to_string(), "1000".to_string()),
        ];
        let optional = [
            ("sasl.mechanism", &self.kafka_sasl_mechanism),
            ("sasl.username", &self.kafka_sasl_username),
            ("sasl.password", &self.kafka_sasl_password),
            ("ssl.ca.location", &self.kafka_ca),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                props.push((k.to_string(), v.clone()));
            }
        }
        props.extend(self.kafka_properties.iter().cloned());
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn flags_become_librdkafka_properties() {
        let cli = Cli::try_parse_from([
            "x",
            "--kafka-bootstrap",
            "k:9092",
            "--kafka-sasl-mechanism",
            "PLAIN",
            "--kafka-property",
            "linger.ms=7",
        ])
        .unwrap();
        let props = cli.kafka.client_properties();
        assert!(props.contains(&("bootstrap.servers".into(), "k:9092".into())));
        assert!(props.contains(&("sasl.mechanism".into(), "PLAIN".into())));
        assert!(props.contains(&("linger.ms".into(), "7".into())));
        assert!(!props.iter().any(|(k, _)| k == "sasl.password"));
    }

    #[test]
    fn bad_property_is_a_clear_error() {
        let err = Cli::try_parse_from(["x", "--kafka-property", "novalue"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("key=value"), "{err}");
    }
}
