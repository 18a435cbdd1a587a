//! The command-line tools some tests drive (Helm, kubectl), found the same way
//! on the local control plane and on kind, so the chart tests and
//! `e2e/kind/e2e.sh` use one definition of "the chart installs".

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::repo_root;

/// The chart under test.
pub const CHART_DIR: &str = "charts/paystream-operator";

/// `$HELM`, else `$PAYSTREAM_CACHE/bin/helm` (what `charts/install-helm.sh`
/// installs), else `helm` on `PATH`.
pub fn helm() -> PathBuf {
    if let Ok(path) = std::env::var("HELM") {
        return path.into();
    }
    let cache = std::env::var("PAYSTREAM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/paystream")
        });
    let cached = cache.join("bin/helm");
    if cached.is_file() {
        cached
    } else {
        "helm".into()
    }
}

/// `$KUBECTL`, else the local control plane's `var/cluster/bin/kubectl`
/// (within the version skew of the cluster), else `kubectl` on `PATH`.
pub fn kubectl() -> PathBuf {
    if let Ok(path) = std::env::var("KUBECTL") {
        return path.into();
    }
    let var = std::env::var("PAYSTREAM_VAR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("var"));
    let local = var.join("cluster/bin/kubectl");
    if local.is_file() {
        local
    } else {
        "kubectl".into()
    }
}

/// The outcome of a command that ran to its end.
#[derive(Debug)]
pub struct Output {
    /// Exit status was zero.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `program args` in the repository root, with `stdin` piped in when
/// given; fails only when the program cannot be started.
pub fn run(program: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} (is it installed?)", program.display()))?;
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().context("stdin")?;
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a command that must succeed and returns its standard output.
pub fn run_ok(program: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let out = run(program, args, stdin)?;
    if !out.success {
        bail!(
            "{} {} failed:\n{}\n{}",
            program.display(),
            args.join(" "),
            out.stdout,
            out.stderr
        );
    }
    Ok(out.stdout)
}

/// A Helm release the test installed, uninstalled when dropped (also when the
/// test panics), so its cluster-wide RBAC objects never outlive the test.
pub struct HelmRelease {
    /// Release name.
    pub name: String,
    /// Release namespace.
    pub namespace: String,
    armed: bool,
}

impl HelmRelease {
    /// `helm install NAME CHART_DIR -n NAMESPACE --wait EXTRA...`.
    pub fn install(name: &str, namespace: &str, extra: &[&str]) -> Result<Self> {
        let mut args = vec![
            "install",
            name,
            CHART_DIR,
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "180s",
        ];
        args.extend_from_slice(extra);
        // Armed before the install so a half-done install is removed too.
        let release = Self {
            name: name.into(),
            namespace: namespace.into(),
            armed: true,
        };
        run_ok(&helm(), &args, None)?;
        Ok(release)
    }

    /// `helm uninstall --wait`, checked.
    pub fn uninstall(mut self) -> Result<()> {
        self.armed = false;
        run_ok(
            &helm(),
            &[
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--wait",
                "--timeout",
                "120s",
            ],
            None,
        )
        .map(|_| ())
    }
}

impl Drop for HelmRelease {
    fn drop(&mut self) {
        if self.armed {
            let _ = run(
                &helm(),
                &["uninstall", &self.name, "--namespace", &self.namespace],
                None,
            );
        }
    }
}
