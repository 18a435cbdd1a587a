//! Why a workload's pods are not ready, as [`Problem`]s the status shows:
//! `Unschedulable` (the scheduler found no node), `ImageUnavailable` (the
//! image cannot be pulled), `CreateContainerConfigError` (e.g. a missing
//! Secret key) and `CrashLooping` (the container keeps exiting: its exit
//! code and the last lines it wrote, from the termination message). Pure:
//! pods in, problems out. A pod that is ready, being deleted or finished is
//! not looked at, and one that is merely starting (ContainerCreating, or
//! Running and not ready yet, never having failed) is no problem. A workload
//! gets at most one problem per reason, whatever its number of pods, and
//! the message is the same from one reconcile to the next while the pods
//! restart: a crashing container is judged by its last termination as well
//! as its current state (CrashLoopBackOff alternates with Running), and the
//! kubelet's back-off message is reduced to the pull error it wraps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

use crate::reconcile::names::Workload;
use crate::status::Problem;

/// The scheduler cannot place the pods.
pub const UNSCHEDULABLE: &str = "Unschedulable";
/// The kubelet cannot pull the image.
pub const IMAGE_UNAVAILABLE: &str = "ImageUnavailable";
/// The kubelet cannot build the container's configuration.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
/// The container keeps exiting.
pub const CRASH_LOOPING: &str = "CrashLooping";

/// The reasons in the order a workload reports them: the earliest stage of
/// a pod's life first.
const ORDER: [&str; 4] = [
    UNSCHEDULABLE,
    IMAGE_UNAVAILABLE,
    CREATE_CONTAINER_CONFIG_ERROR,
    CRASH_LOOPING,
];

/// Waiting reasons that mean the image cannot be had.
const IMAGE_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];

/// Most characters kept of a message from the kubelet or a container.
const MAX_DETAIL: usize = 300;

/// The problems of `workload` that its `pods` show, at most one per
/// reason, in a fixed order. When pods disagree, the smallest message wins,
/// so the result does not depend on the pods' order or names. Pure.
pub fn classify(workload: Workload, pods: &[Pod]) -> Vec<Problem> {
    let mut found: BTreeMap<&'static str, String> = BTreeMap::new();
    for pod in pods.iter().filter(|p| looked_at(p)) {
        for (reason, message) in of_pod(workload, pod) {
            match found.get_mut(reason) {
                Some(m) if *m <= message => {}
                Some(m) => *m = message,
                None => {
                    found.insert(reason, message);
                }
            }
        }
    }
    ORDER
        .iter()
        .filter_map(|r| found.remove(r).map(|m| Problem::new(r, m)))
        .collect()
}

/// Whether a pod can show a problem: not ready, not being deleted, not
/// finished (the ReplicaSet replaces a finished pod).
fn looked_at(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    pod.metadata.deletion_timestamp.is_none() && !finished && !condition(pod, "Ready", "True")
}

/// Whether the pod has condition `type_` with status `status`.
fn condition(pod: &Pod, type_: &str, status: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == status))
}

/// The problems of one pod, as (reason, message).
fn of_pod(workload: Workload, pod: &Pod) -> Vec<(&'static str, String)> {
    let w = workload.as_str();
    let mut out = Vec::new();
    let unschedulable = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        });
    if let Some(c) = unschedulable {
        // The scheduler appends what preemption could do: nothing new.
        let m = c.message.as_deref().unwrap_or_default();
        let m = m.split_once(" preemption:").map_or(m, |(head, _)| head);
        out.push((
            UNSCHEDULABLE,
            format!(
                "{w}: pods cannot be scheduled: {} (check {w}.resources and placement)",
                one_line(m)
            ),
        ));
    }
    let Some(status) = pod.status.as_ref() else {
        return out;
    };
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        if let Some(problem) = of_container(w, pod, c) {
            out.push(problem);
        }
    }
    out
}

/// The problem of one container, if it has one.
fn of_container(w: &str, pod: &Pod, c: &ContainerStatus) -> Option<(&'static str, String)> {
    let state = c.state.as_ref();
    let waiting = state.and_then(|s| s.waiting.as_ref());
    let waiting_reason = waiting.and_then(|x| x.reason.as_deref()).unwrap_or("");
    let kubelet = waiting.and_then(|x| x.message.as_deref()).unwrap_or("");
    if IMAGE_REASONS.contains(&waiting_reason) {
        return Some((
            IMAGE_UNAVAILABLE,
            format!(
                "{w}: cannot pull image {:?}: {} (check {w}.image)",
                image_of(pod, c),
                one_line(pull_error(kubelet))
            ),
        ));
    }
    if waiting_reason == "CreateContainerConfigError" {
        return Some((
            CREATE_CONTAINER_CONFIG_ERROR,
            format!(
                "{w}: container {} cannot be created: {}",
                c.name,
                one_line(kubelet)
            ),
        ));
    }
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    // `Some(None)`: crashing, but the kubelet recorded no termination.
    let exit = match state.and_then(|s| s.terminated.as_ref()) {
        // Exited a moment ago: the kubelet restarts it, or backs off.
        Some(now) if now.exit_code != 0 => Some(Some(now)),
        Some(_) => None,
        // Backing off: it exited, maybe with 0 (a server must not end).
        None if waiting_reason == "CrashLoopBackOff" => Some(last),
        // Running again, or starting again, after a failure: not ready yet,
        // and likely to fail the same way.
        None if !c.ready => last.filter(|t| t.exit_code != 0).map(Some),
        None => None,
    }?;
    Some((CRASH_LOOPING, crash_message(w, &c.name, exit)))
}

fn crash_message(w: &str, container: &str, exit: Option<&ContainerStateTerminated>) -> String {
    let Some(t) = exit else {
        return format!("{w}: container {container} keeps exiting (see its logs with --previous)");
    };
    let code = match t.reason.as_deref() {
        // "Error" and "Completed" only repeat what the code says.
        Some(r) if r != "Error" && r != "Completed" => format!("{} ({r})", t.exit_code),
        _ => t.exit_code.to_string(),
    };
    match t.message.as_deref().and_then(last_words) {
        Some(said) => format!("{w}: container {container} keeps exiting with code {code}: {said}"),
        None => format!(
            "{w}: container {container} keeps exiting with code {code} (no termination message: see its logs with --previous)"
        ),
    }
}

/// The image the pod's spec names for container `c` (what the user wrote),
/// else the one its status reports.
fn image_of(pod: &Pod, c: &ContainerStatus) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|k| k.name == c.name)
        })
        .and_then(|k| k.image.clone())
        .unwrap_or_else(|| c.image.clone())
}

/// The pull error inside the kubelet's message: the back-off message
/// (`Back-off pulling image "x": ErrImagePull: <error>`, kubelet 1.30 and
/// later) wraps the error of the failed pull, so both states read the same.
fn pull_error(message: &str) -> &str {
    const BACK_OFF: &str = "Back-off pulling image ";
    let Some(rest) = message.strip_prefix(BACK_OFF) else {
        return message;
    };
    match rest.split_once("\": ") {
        Some((_, error)) => error.strip_prefix("ErrImagePull: ").unwrap_or(error),
        None => message,
    }
}

/// The gist of a termination message (with `FallbackToLogsOnError`, the
/// container's last log lines), on one line without timestamps: the error a
/// Rust `main` returned (`Error: …` and its `Caused by:` chain), a panic's
/// location and message, or the last line written, with a log line's
/// timestamp and colours dropped and a JSON log line reduced to its level,
/// message and error. `None` when there is nothing to say. Pure.
pub fn last_words(message: &str) -> Option<String> {
    let lines: Vec<String> = message
        .lines()
        .map(strip_ansi)
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let said = if let Some(i) = lines.iter().rposition(|l| l.starts_with("Error: ")) {
        let mut parts = vec![lines[i].trim().to_string()];
        for l in &lines[i + 1..] {
            let t = l.trim();
            if t.starts_with("Stack backtrace") {
                break;
            }
            if t != "Caused by:" {
                parts.push(strip_numbering(t).to_string());
            }
        }
        parts.join(": ")
    } else {
        let last = lines.last()?;
        let before = lines.len().checked_sub(2).map(|i| lines[i].trim());
        match before {
            Some(b) if b.starts_with("thread '") && b.contains("panicked at") => {
                format!("{b} {}", last.trim())
            }
            _ => log_line(last),
        }
    };
    let said = one_line(&said);
    (!said.is_empty()).then_some(said)
}

/// `0: cause` → `cause` (anyhow numbers the causes when there are several).
fn strip_numbering(line: &str) -> &str {
    match line.split_once(": ") {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => line,
    }
}

/// A log line without what changes from one run to the next: a JSON line
/// becomes `LEVEL message error=…`; a text line loses its leading
/// timestamp.
fn log_line(line: &str) -> String {
    let line = line.trim();
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(line) {
        let field = |k: &str| {
            o.get(k)
                .or_else(|| o.get("fields").and_then(|f| f.get(k)))
                .and_then(|v| v.as_str())
        };
        let mut out: Vec<String> = Vec::new();
        out.extend(field("level").map(str::to_string));
        out.extend(
            field("message")
                .or_else(|| field("msg"))
                .map(str::to_string),
        );
        out.extend(field("error").map(|e| format!("error={e}")));
        if !out.is_empty() {
            return out.join(" ");
        }
    }
    match line.split_once(' ') {
        Some((first, rest)) if looks_like_timestamp(first) => rest.trim().to_string(),
        _ => line.to_string(),
    }
}

/// `2026-01-02T03:04:05.123Z` and the like.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && s.contains('T')
}

/// Drops ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` on one line, spaces collapsed, at most [`MAX_DETAIL`] characters.
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= MAX_DETAIL {
        return joined;
    }
    let mut cut: String = joined.chars().take(MAX_DETAIL - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// An API pod whose only container has `status` as its status.
    fn api_pod(name: &str, container_status: &str) -> Pod {
        pod(&format!(
            r#"
metadata: {{ name: {name}, namespace: pay }}
spec:
  containers: [{{ name: api, image: "ghcr.io/paystream/paystream-api:0.1.0" }}]
status:
  phase: Running
  conditions:
    - {{ type: PodScheduled, status: "True" }}
    - {{ type: Ready, status: "False" }}
  containerStatuses:
    - name: api
      image: ghcr.io/paystream/paystream-api:0.1.0
      imageID: ""
      ready: false
      restartCount: 3
{container_status}
"#
        ))
    }

    const PULL_ERROR: &str = "rpc error: code = NotFound desc = failed to pull and unpack image \"ghcr.io/paystream/paystream-api:0.1.0\": not found";

    #[test]
    fn an_image_that_cannot_be_pulled_reads_the_same_in_both_states() {
        let err = api_pod(
            "a",
            &format!(
                "      state: {{ waiting: {{ reason: ErrImagePull, message: '{PULL_ERROR}' }} }}"
            ),
        );
        let back_off = api_pod(
            "a",
            &format!(
                "      state: {{ waiting: {{ reason: ImagePullBackOff, message: 'Back-off pulling image \"ghcr.io/paystream/paystream-api:0.1.0\": ErrImagePull: {PULL_ERROR}' }} }}"
            ),
        );
        let a = classify(Workload::Api, &[err]);
        let b = classify(Workload::Api, &[back_off]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].reason, IMAGE_UNAVAILABLE);
        assert_eq!(
            a[0].message,
            format!(
                "api: cannot pull image \"ghcr.io/paystream/paystream-api:0.1.0\": {PULL_ERROR} (check api.image)"
            )
        );
        assert_eq!(
            a, b,
            "no flapping between ErrImagePull and ImagePullBackOff"
        );
        for reason in ["ErrImageNeverPull", "InvalidImageName"] {
            let p = api_pod(
                "a",
                &format!("      state: {{ waiting: {{ reason: {reason}, message: nope }} }}"),
            );
            assert_eq!(classify(Workload::Api, &[p])[0].reason, IMAGE_UNAVAILABLE);
        }
    }

    const CRASHED: &str = r#"      lastState:
        terminated:
          exitCode: 1
          reason: Error
          message: |
            {"timestamp":"2026-01-02T03:04:05Z","level":"INFO","message":"starting"}
            Error: PAYSTREAM_JWT_SECRET (--jwt-secret) is 5 bytes long; HS256 needs at least 32 bytes
"#;

    #[test]
    fn a_crash_loop_names_the_container_the_code_and_the_last_words() {
        let backing_off = api_pod(
            "a",
            &format!(
                "      state: {{ waiting: {{ reason: CrashLoopBackOff, message: back-off 40s }} }}\n{CRASHED}"
            ),
        );
        let p = classify(Workload::Api, &[backing_off]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].reason, CRASH_LOOPING);
        assert_eq!(
            p[0].message,
            "api: container api keeps exiting with code 1: Error: PAYSTREAM_JWT_SECRET (--jwt-secret) is 5 bytes long; HS256 needs at least 32 bytes"
        );
        // Between two back-offs it runs for a moment, not ready: the same
        // problem, word for word, so the status does not flap.
        let running = api_pod(
            "a",
            &format!(
                "      state: {{ running: {{ startedAt: '2026-01-02T03:05:00Z' }} }}\n{CRASHED}"
            ),
        );
        assert_eq!(classify(Workload::Api, &[running]), p);
        let just_exited = api_pod(
            "a",
            "      state: { terminated: { exitCode: 137, reason: OOMKilled } }",
        );
        assert_eq!(
            classify(Workload::Api, &[just_exited])[0].message,
            "api: container api keeps exiting with code 137 (OOMKilled) (no termination message: see its logs with --previous)"
        );
    }

    #[test]
    fn a_pod_that_is_merely_starting_is_no_problem() {
        let creating = api_pod(
            "a",
            "      state: { waiting: { reason: ContainerCreating } }",
        );
        let starting = api_pod(
            "b",
            "      state: { running: { startedAt: '2026-01-02T03:05:00Z' } }",
        );
        let pending = pod("metadata: { name: c }\nstatus: { phase: Pending }");
        // Restarted once after a clean exit, running again: no failure seen.
        let restarted = api_pod(
            "d",
            "      state: { running: {} }\n      lastState: { terminated: { exitCode: 0, reason: Completed } }",
        );
        assert_eq!(
            classify(Workload::Api, &[creating, starting, pending, restarted]),
            vec![]
        );
    }

    #[test]
    fn ready_deleted_and_finished_pods_are_not_looked_at() {
        let crashing =
            format!("      state: {{ waiting: {{ reason: CrashLoopBackOff }} }}\n{CRASHED}");
        let mut ready = api_pod("a", &crashing);
        let mut deleted = ready.clone();
        let mut failed = ready.clone();
        if let Some(cs) = ready.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            cs[1].status = "True".into();
        }
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        if let Some(s) = failed.status.as_mut() {
            s.phase = Some("Failed".into());
        }
        assert_eq!(classify(Workload::Api, &[ready, deleted, failed]), vec![]);
    }

    #[test]
    fn unschedulable_pods_say_why_without_the_preemption_part() {
        let p = pod(r#"
metadata: { name: a }
status:
  phase: Pending
  conditions:
    - type: PodScheduled
      status: "False"
      reason: Unschedulable
      message: "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
"#);
        let got = classify(Workload::Consumer, &[p]);
        assert_eq!(
            got,
            vec![Problem::new(
                UNSCHEDULABLE,
                "consumer: pods cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu. (check consumer.resources and placement)"
            )]
        );
    }

    #[test]
    fn a_missing_secret_key_is_a_config_error() {
        let p = api_pod(
            "a",
            "      state: { waiting: { reason: CreateContainerConfigError, message: 'couldn''t find key secret in Secret pay/api-jwt' } }",
        );
        assert_eq!(
            classify(Workload::Api, &[p]),
            vec![Problem::new(
                CREATE_CONTAINER_CONFIG_ERROR,
                "api: container api cannot be created: couldn't find key secret in Secret pay/api-jwt"
            )]
        );
    }

    #[test]
    fn one_problem_per_workload_and_reason_not_per_pod() {
        let crash = |name: &str, code: i32| {
            api_pod(
                name,
                &format!(
                    "      state: {{ waiting: {{ reason: CrashLoopBackOff }} }}\n      lastState: {{ terminated: {{ exitCode: {code}, reason: Error, message: boom }} }}"
                ),
            )
        };
        let unschedulable = pod(
            "metadata: { name: z }\nstatus:\n  phase: Pending\n  conditions: [{ type: PodScheduled, status: 'False', reason: Unschedulable, message: no nodes }]",
        );
        let pods = [crash("a", 2), crash("b", 1), crash("c", 1), unschedulable];
        let got = classify(Workload::Api, &pods);
        let reasons: Vec<&str> = got.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons, [UNSCHEDULABLE, CRASH_LOOPING]);
        assert_eq!(
            got[1].message,
            "api: container api keeps exiting with code 1: boom"
        );
        // The pods' order does not matter.
        let mut reversed = pods.to_vec();
        reversed.reverse();
        assert_eq!(classify(Workload::Api, &reversed), got);
    }

    #[test]
    fn last_words_are_one_stable_line() {
        assert_eq!(
            last_words(
                "Error: reading /etc/x\n\nCaused by:\n    No such file or directory (os error 2)\n"
            )
            .as_deref(),
            Some("Error: reading /etc/x: No such file or directory (os error 2)")
        );
        assert_eq!(
            last_words("Error: a\n\nCaused by:\n    0: b\n    1: c\n\nStack backtrace:\n   0: x")
                .as_deref(),
            Some("Error: a: b: c")
        );
        assert_eq!(
            last_words("thread 'main' panicked at src/main.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n")
                .as_deref(),
            Some("thread 'main' panicked at src/main.rs:3:5: boom")
        );
        assert_eq!(
            last_words("\u{1b}[2m2026-01-02T03:04:05.123456Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m paystream: redis down\n")
                .as_deref(),
            Some("ERROR paystream: redis down")
        );
        assert_eq!(
            last_words(r#"{"timestamp":"2026-01-02T03:04:05Z","level":"ERROR","message":"cannot connect","error":"refused","target":"x"}"#)
                .as_deref(),
            Some("ERROR cannot connect error=refused")
        );
        assert_eq!(last_words("\n  \n"), None);
        let long = "x".repeat(1000);
        assert_eq!(
            last_words(&long).map(|s| s.chars().count()),
            Some(MAX_DETAIL)
        );
    }
}
