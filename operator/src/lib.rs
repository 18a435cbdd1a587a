//! The paystream operator: reconciles `PaymentPipeline` resources into the
//! producer, consumer and API workloads, the Kafka topics and a status that
//! reports the binlog position and the consumer lag.
//!
//! Pure modules turn data into data: [`crd`] (the resource's types),
//! [`reconcile::validate`] and the builders under [`reconcile`] (a pipeline to
//! Kubernetes objects), [`topics::plan`] (what to do to Kafka), [`status`]
//! (conditions and phase), [`pod_problems`] (why pods are not ready),
//! [`refresh`] (when to refresh next) and
//! [`leader::decide`], and [`cleaned`] (the cleanups already done). The I/O modules only move
//! data: [`reconcile::apply`] (server-side apply), [`children`] (the watch
//! caches of what it applied), [`dereference`] (the Secrets the spec
//! names), [`pods`] (the pods of workloads that are not ready),
//! [`secret_versions`] (the Secrets' versions, briefly cached), [`kafka`] (Kafka clients shared per cluster),
//! [`topics`], [`observe`] and [`group_offsets`] (Kafka), [`leader`] (the
//! Lease), [`apiclient`] (the Kubernetes client, every request counted). [`controller`] wires them into a kube-rs
//! controller.

pub mod apiclient;
pub mod children;
pub mod cleaned;
pub mod config;
pub mod controller;
pub mod crd;
pub mod dereference;
pub mod group_offsets;
pub mod kafka;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod pod_problems;
pub mod pods;
pub mod reconcile;
pub mod refresh;
pub mod secret_versions;
pub mod status;
pub mod topics;
