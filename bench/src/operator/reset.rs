//! How the operator benchmark empties the cluster between rounds. On the
//! local control plane it is restarted with an empty etcd
//! (`e2e/controlplane/down.sh` then `up.sh`, with the controller manager's
//! rate and the profiling switch it ran with, the processes killed since
//! their data goes anyway): about 9 s, where deleting 1,000 pipelines'
//! namespaces and waiting for the garbage collector and the namespace
//! controller to empty them took about 40 s on top of the operator's own
//! deletion. The first round starts after a restart too, so every round
//! starts on a cluster as fresh. With `--cleanup auto`, a cluster that is
//! not the local one, or that holds pipelines which are not the
//! benchmark's, has each round delete its namespaces instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use paystream_testkit::repo_root;
use serde_json::Value;

/// How a round leaves the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cleanup {
    /// `reset` on the local control plane when it holds no other
    /// PaymentPipelines, `delete` otherwise.
    Auto,
    /// Restart the local control plane with an empty etcd.
    Reset,
    /// Delete the round's namespaces and wait until they are gone.
    Delete,
}

impl Cleanup {
    /// The name the report uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Reset => "reset",
            Self::Delete => "delete",
        }
    }
}

/// Which cleanup a run uses: `reset` only on the local control plane, and
/// by `auto` only when nobody else's pipelines would be wiped with it. Pure.
pub fn choose(asked: Cleanup, local: bool, other_pipelines: usize) -> anyhow::Result<Cleanup> {
    match asked {
        Cleanup::Auto if local && other_pipelines == 0 => Ok(Cleanup::Reset),
        Cleanup::Auto | Cleanup::Delete => Ok(Cleanup::Delete),
        Cleanup::Reset if local => Ok(Cleanup::Reset),
        Cleanup::Reset => bail!(
            "--cleanup reset restarts the local control plane (make cluster-up), and KUBECONFIG \
             points elsewhere"
        ),
    }
}

/// Whether a round times the operator's deletion of its pipelines: every
/// round that deletes its namespaces has to delete them anyway; with resets,
/// the last round of each count asked for (`at`). Pure.
pub fn times_deletion(cleanup: Cleanup, at: &[usize], count: usize, last_round: bool) -> bool {
    cleanup != Cleanup::Reset || (last_round && at.contains(&count))
}

/// The local control plane's kubeconfig: `$PAYSTREAM_VAR/cluster/kubeconfig`.
fn local_kubeconfig() -> PathBuf {
    std::env::var_os("PAYSTREAM_VAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("var"))
        .join("cluster/kubeconfig")
}

/// Whether `kubeconfig` is the local control plane's (the scripts that
/// restart it are there, and so is its kubeconfig).
pub fn is_local(kubeconfig: &Path) -> bool {
    let same = match (
        std::fs::canonicalize(kubeconfig),
        std::fs::canonicalize(local_kubeconfig()),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    same && repo_root().join("e2e/controlplane/up.sh").is_file()
}

/// The environment `up.sh` needs to start the cluster as it ran: each
/// setting the controller manager was started with, and none of the ones it
/// ran without (a value ending in "(default)", see `cluster_settings`). Pure.
pub fn up_env(settings: &Value) -> Vec<(&'static str, Option<String>)> {
    [
        (
            "CONTROLLER_MANAGER_KUBE_API_QPS",
            "controller_manager_kube_api_qps",
        ),
        (
            "CONTROLLER_MANAGER_KUBE_API_BURST",
            "controller_manager_kube_api_burst",
        ),
        ("CONTROLPLANE_PROFILING", "profiling"),
    ]
    .into_iter()
    .map(|(env, key)| {
        let value = settings[key]
            .as_str()
            .filter(|v| !v.ends_with("(default)"))
            .map(str::to_string);
        (env, value)
    })
    .collect()
}

/// Restarts the local control plane with an empty etcd and the given
/// settings; the scripts' output goes to `log`.
pub async fn restart(settings: &Value, log: &Path) -> anyhow::Result<()> {
    let scripts = repo_root().join("e2e/controlplane");
    for script in ["down.sh", "up.sh"] {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(scripts.join(script))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (key, value) in up_env(settings) {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        if script == "down.sh" {
            // No graceful stop: the etcd data goes anyway.
            command.env("CONTROLPLANE_STOP_GRACE_SECS", "0");
        }
        let status = command
            .status()
            .await
            .with_context(|| format!("running e2e/controlplane/{script}"))?;
        if !status.success() {
            bail!(
                "e2e/controlplane/{script} failed ({status}); see {}",
                log.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn auto_resets_only_a_local_cluster_without_other_pipelines() {
        assert_eq!(choose(Cleanup::Auto, true, 0).ok(), Some(Cleanup::Reset));
        assert_eq!(choose(Cleanup::Auto, true, 1).ok(), Some(Cleanup::Delete));
        assert_eq!(choose(Cleanup::Auto, false, 0).ok(), Some(Cleanup::Delete));
        assert_eq!(choose(Cleanup::Delete, true, 0).ok(), Some(Cleanup::Delete));
        assert_eq!(choose(Cleanup::Reset, true, 3).ok(), Some(Cleanup::Reset));
        assert!(choose(Cleanup::Reset, false, 0).is_err());
    }

    #[test]
    fn with_resets_only_the_last_round_of_the_counts_asked_times_the_deletion() {
        assert!(times_deletion(Cleanup::Reset, &[100], 100, true));
        assert!(!times_deletion(Cleanup::Reset, &[100], 100, false));
        assert!(!times_deletion(Cleanup::Reset, &[100], 1000, true));
        assert!(times_deletion(Cleanup::Reset, &[100, 1000], 1000, true));
        assert!(times_deletion(Cleanup::Delete, &[], 1000, false));
    }

    #[test]
    fn the_restart_keeps_the_settings_the_cluster_ran_with() {
        let env = up_env(&json!({
            "controller_manager_kube_api_qps": "200",
            "controller_manager_kube_api_burst": "30 (default)",
            "profiling": "false",
        }));
        assert_eq!(
            env,
            [
                ("CONTROLLER_MANAGER_KUBE_API_QPS", Some("200".to_string())),
                ("CONTROLLER_MANAGER_KUBE_API_BURST", None),
                ("CONTROLPLANE_PROFILING", Some("false".to_string())),
            ]
        );
    }
}
