//! Dereference, the first step of a reconcile: the Secrets the spec names
//! must exist (the source, Redis, CA, API JWT and API database Secrets);
//! their `resourceVersion`s are noted (a rotated Secret rolls the pods that
//! read it), and the Kafka SASL Secret is read, since the operator's own
//! admin client needs it. A missing Secret or key is a `SecretMissing`
//! problem, never an error.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::reconcile::validate::Validated;
use crate::secret_versions::SecretVersions;
use crate::status::Problem;

/// Reads `key` of Secret `name`, as text.
fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key).cloned())
        })
}

/// What dereferencing the Secrets found.
#[derive(Default)]
pub struct Dereferenced {
    /// The Kafka SASL credentials the operator itself needs.
    pub sasl: Option<(String, String)>,
    /// `resourceVersion` of each named Secret that exists, by name: a
    /// rotated Secret rolls the pods that read it.
    pub versions: BTreeMap<String, String>,
}

/// Dereference: checks the Secrets the spec names exist, notes their
/// versions, and returns the Kafka SASL credentials the operator needs.
pub async fn dereference(
    secrets: &Api<Secret>,
    cache: &SecretVersions,
    v: &Validated,
    problems: &mut Vec<Problem>,
) -> Result<Dereferenced, kube::Error> {
    let mut out = Dereferenced::default();
    let s = &v.spec;
    let mut named = vec![(
        "source.credentialsSecretRef",
        s.source.credentials_secret_ref.name.clone(),
    )];
    if let Some(r) = &s.redis.credentials_secret_ref {
        named.push(("redis.credentialsSecretRef", r.name.clone()));
    }
    if let Some(r) = &s.source.tls.ca_secret_ref {
        named.push(("source.tls.caSecretRef", r.name.clone()));
    }
    if let Some(r) = &s.api.jwt_secret_ref {
        named.push(("api.jwtSecretRef", r.name.clone()));
    }
    if let Some(r) = &s.api.jwt_public_key_ref {
        named.push(("api.jwtPublicKeyRef", r.name.clone()));
    }
    if let Some(r) = &s.redis.ca_secret_ref {
        named.push(("redis.caSecretRef", r.name.clone()));
    }
    if let Some(r) = &s.api.database_credentials_secret_ref {
        named.push(("api.databaseCredentialsSecretRef", r.name.clone()));
    }
    for (field, name) in named {
        if out.versions.contains_key(&name) {
            continue;
        }
        if let Some(version) = cache.get(secrets, &v.namespace, &name).await? {
            out.versions.insert(name, version);
        } else {
            problems.push(Problem::new(
                "SecretMissing",
                format!(
                    "{field}: Secret {name:?} not found in namespace {}; create it",
                    v.namespace
                ),
            ));
        }
    }
    let Some(r) = &s.kafka.credentials_secret_ref else {
        return Ok(out);
    };
    let secret = secrets.get_opt(&r.name).await?;
    if let Some(version) = secret
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone())
    {
        out.versions.insert(r.name.clone(), version);
    }
    out.sasl = match secret {
        None => {
            problems.push(Problem::new(
                "SecretMissing",
                format!(
                    "kafka.credentialsSecretRef: Secret {:?} not found in namespace {}; create it",
                    r.name, v.namespace
                ),
            ));
            None
        }
        Some(secret) => match (
            secret_value(&secret, &r.username_key),
            secret_value(&secret, &r.password_key),
        ) {
            (Some(u), Some(p)) => Some((u, p)),
            _ => {
                problems.push(Problem::new(
                    "SecretMissing",
                    format!(
                        "kafka.credentialsSecretRef: Secret {:?} lacks key {:?} or {:?}",
                        r.name, r.username_key, r.password_key
                    ),
                ));
                None
            }
        },
    };
    Ok(out)
}
