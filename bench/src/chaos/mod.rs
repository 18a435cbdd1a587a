//! `paystream-bench chaos`: a bounded chaos run with recovery measurement.
//! It sets up a pipeline of its own (scratch database, topic prefix,
//! consumer group, private Redis, proxies; see [`pipeline`]), writes a seeded
//! mix of changes at `--rate` rows/s ([`writer`]) while readers check the
//! API's answers against MySQL ([`probe`]), and injects one fault at a time
//! from a seeded schedule ([`faults`]). After each fault heals it inserts a
//! probe purchase and measures how long the pipeline takes to serve it.
//! At the end it stops writing, waits for the read model to converge and
//! verifies MySQL against Redis, the API and the change topics
//! ([`verify`]); the report goes to `bench/results/chaos-<time>.{json,md,svg}`
//! ([`report`]) and the last line of stdout is the summary. It fails (exit
//! status 1) on any lost, stale or duplicate row, wrong answer, fault not
//! recovered, or recovery above `--max-recovery-secs`. docs/chaos.md has
//! the details.

mod api;
mod faults;
mod pipeline;
mod probe;
mod report;
mod rng;
mod timeline;
mod verify;
mod writer;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use paystream_testkit::{Stack, checker, repo_root};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use api::Api;
use faults::{Kind, Server};
use pipeline::{Names, Pipeline};
use probe::{Prober, ReaderCtx};
use report::{FaultRecord, Run, Verified};
use timeline::Timeline;
use writer::{Shared, Stats, Touched, Writer};

use crate::mysql::admin;

/// Chaos run parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Planned seconds of writing; faults are spread over them (a slow
    /// recovery pushes later faults back and makes the run longer).
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seed of the fault schedule and the writes.
    #[arg(long, default_value_t = 19)]
    seed: u64,
    /// Row changes per second the writers aim at.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Where the producer, consumer and API binaries are (default:
    /// $CARGO_TARGET_DIR/release if all three are there, else .../debug).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Fault kinds to choose from (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<Kind>,
    /// Least seconds between two planned faults (fewer kinds fit a short run).
    #[arg(long, default_value_t = 25)]
    min_gap_secs: u64,
    /// Give up on a fault's probe after this many seconds: not recovered.
    #[arg(long, default_value_t = 120)]
    recovery_cap_secs: u64,
    /// Fail when any recovery takes longer than this.
    #[arg(long)]
    max_recovery_secs: Option<f64>,
    /// Purchases seeded before the run.
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
    /// Users owning them.
    #[arg(long, default_value_t = 1_000)]
    users: u64,
    /// Writing connections.
    #[arg(long, default_value_t = 4)]
    writers: u64,
    /// Concurrent API readers.
    #[arg(long, default_value_t = 3)]
    readers: u64,
    /// Purchases bought through the API per second.
    #[arg(long, default_value_t = 4)]
    api_writes_per_sec: u64,
    /// Seconds to wait for the read model to converge at the end.
    #[arg(long, default_value_t = 300)]
    settle_secs: u64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C or SIGTERM asked the run to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn watch_signals() {
    tokio::spawn(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => {}
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("chaos: interrupted; healing the current fault, then cleaning up");
    });
}

/// Sleeps until `at`, waking early when interrupted.
async fn wait_until(at: Instant) -> anyhow::Result<()> {
    while Instant::now() < at {
        if interrupted() {
            bail!("interrupted");
        }
        tokio::time::sleep_until(at.min(Instant::now() + Duration::from_millis(200))).await;
    }
    Ok(())
}

/// Returns once the run was interrupted.
async fn until_interrupted() {
    while !interrupted() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kafka_port(stack: &Stack) -> u16 {
    stack
        .kafka_bootstrap
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(19092)
}

/// Runs the chaos run, writes its report and prints its summary last.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.seconds == 0 || args.rate == 0 || args.writers == 0 || args.rows == 0 || args.users == 0
    {
        bail!("--seconds, --rate, --writers, --rows and --users must be positive");
    }
    let bins = pipeline::find_bins(args.bin_dir.as_deref())?;
    let stack = Stack::from_env();
    let names = Names::new();
    watch_signals();
    let kinds: Vec<Kind> = if args.faults.is_empty() {
        Kind::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let mut run = Run {
        benchmark: "chaos".into(),
        config: json!({
            "seconds": args.seconds, "seed": args.seed, "rate": args.rate, "writers": args.writers,
            "readers": args.readers, "rows": args.rows, "users": args.users,
            "faults": kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "min_gap_secs": args.min_gap_secs, "recovery_cap_secs": args.recovery_cap_secs,
            "max_recovery_secs": args.max_recovery_secs, "bin_dir": bins.producer.parent().map(|p| p.display().to_string()),
        }),
        ..Run::default()
    };
    let result = execute(&args, &stack, &names, bins, &kinds, &mut run).await;
    faults::resume_kafka();
    Server::Kafka.ensure_up(kafka_port(&stack)).await;
    Server::Mariadb.ensure_up(stack.mysql_port).await;
    pipeline::cleanup(&stack, &names).await;
    if let Err(e) = result {
        eprintln!("chaos: {e:#}");
        run.error = Some(format!("{e:#}"));
    }
    finish(&args, run)
}

/// Judges, writes the report, prints the summary line last.
fn finish(args: &Args, mut run: Run) -> anyhow::Result<()> {
    run.date = chrono::Utc::now().to_rfc3339();
    run.totals = report::totals(&run);
    run.failures = report::failures(&run.totals, args.max_recovery_secs, run.error.as_deref());
    let json = serde_json::to_value(&run)?;
    let (j, m) = crate::report::write("chaos", &json, "")?;
    let svg_path = j.with_extension("svg");
    let svg_name = svg_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    std::fs::write(&svg_path, report::svg(&run, args.recovery_cap_secs as f64))?;
    let md = report::markdown(&run, &svg_name);
    std::fs::write(&m, &md)?;
    println!(
        "{md}\nwritten: {}, {} and {}",
        j.display(),
        m.display(),
        svg_path.display()
    );
    println!("{}", report::summary_line(&run.totals));
    if run.failures.is_empty() {
        Ok(())
    } else {
        bail!("chaos run failed: {}", run.failures.join("; "))
    }
}

/// The load: writers, readers and the API writer, stopped (and aborted)
/// when dropped.
struct Load {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Stats>>,
    others: Vec<JoinHandle<()>>,
}

impl Load {
    async fn finish(mut self) -> Stats {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Stats::default();
        for h in self.writers.drain(..) {
            if let Ok(s) = h.await {
                total.absorb(&s);
            }
        }
        for h in self.others.drain(..) {
            let _ = h.await;
        }
        total
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in &self.writers {
            h.abort();
        }
        for h in &self.others {
            h.abort();
        }
    }
}

struct Ctx {
    api: Arc<Api>,
    /// The change topics the read model is built from.
    topics: Vec<String>,
    timeline: Arc<Timeline>,
    touched: Arc<Touched>,
    next_id: Arc<AtomicU64>,
}

fn start_load(args: &Args, stack: &Stack, names: &Names, ctx: &Ctx) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        stack: stack.clone(),
        db: names.db.clone(),
        txn_db: names.txn_db.clone(),
        users: args.users,
        next_id: Arc::clone(&ctx.next_id),
        next_txn: AtomicU64::new(1),
        touched: Arc::clone(&ctx.touched),
        timeline: Arc::clone(&ctx.timeline),
        stop: Arc::clone(&stop),
    });
    let per_writer = args.rate as f64 / args.writers as f64;
    let writers = (0..args.writers)
        .map(|w| {
            let writer = Writer::new(w, args.writers, args.seed, args.rows, Arc::clone(&shared));
            tokio::spawn(writer.run(per_writer))
        })
        .collect();
    let rctx = Arc::new(ReaderCtx {
        api: Arc::clone(&ctx.api),
        stack: stack.clone(),
        db: names.db.clone(),
        touched: Arc::clone(&ctx.touched),
        timeline: Arc::clone(&ctx.timeline),
        stop: Arc::clone(&stop),
    });
    let mut others: Vec<JoinHandle<()>> = (0..args.readers)
        .map(|k| tokio::spawn(probe::reader(Arc::clone(&rctx), args.seed, k)))
        .collect();
    if args.api_writes_per_sec > 0 {
        others.push(tokio::spawn(api::api_writer(
            Arc::clone(&ctx.api),
            args.seed,
            args.users,
            args.api_writes_per_sec,
            Arc::clone(&ctx.touched),
            Arc::clone(&ctx.timeline),
            Arc::clone(&stop),
        )));
    }
    Load {
        stop,
        writers,
        others,
    }
}

/// Waits until the read model holds every seeded row and the API trusts it.
async fn warm_up(stack: &Stack, names: &Names, pipe: &Pipeline) -> anyhow::Result<()> {
    let keys = names.keys()?;
    let (report, secs) = verify::converge(
        stack,
        &names.db,
        &pipe.redis_url(),
        &keys,
        Duration::from_secs(300),
    )
    .await;
    match report {
        Some(r) if r.is_equal() => eprintln!("chaos: read model complete after {secs:.1} s ({r})"),
        Some(r) => bail!("the read model never matched the seeded rows: {r}"),
        None => bail!("the checker never ran"),
    }
    paystream_testkit::wait_for(
        "the API to trust the read model",
        Duration::from_secs(120),
        || async {
            (pipe.api.metric("paystream_api_read_model_complete").await == Some(1.0)).then_some(())
        },
    )
    .await?;
    Ok(())
}

async fn execute(
    args: &Args,
    stack: &Stack,
    names: &Names,
    bins: pipeline::Bins,
    kinds: &[Kind],
    run: &mut Run,
) -> anyhow::Result<()> {
    eprintln!(
        "chaos: database {}, topic and key prefix {}, seed {}; logs in {}",
        names.db,
        names.prefix,
        args.seed,
        repo_root().join("var/test-logs").display()
    );
    pipeline::create_db(stack, names, args.rows, args.users, args.writers).await?;
    let mut pipe = Pipeline::start(stack, names, bins).await?;
    run.logs = pipe.logs();
    warm_up(stack, names, &pipe).await?;
    let ctx = Ctx {
        api: Arc::new(Api::new(pipe.api_base())?),
        topics: ["purchases", "packages"]
            .iter()
            .map(|t| names.scratch(stack).topic(t))
            .collect(),
        timeline: Arc::new(Timeline::new()),
        touched: Arc::new(Touched::default()),
        next_id: Arc::new(AtomicU64::new(args.rows + 1)),
    };
    let result = drive(args, stack, names, kinds, &mut pipe, &ctx, run).await;
    // Also after an error: the report shows what happened until then.
    let cap = args.recovery_cap_secs.max(1) as f64;
    run.duration_secs = ctx.timeline.now();
    run.timeline = ctx.timeline.buckets();
    run.reads = timeline::sum(&run.timeline, 0.0, f64::MAX);
    run.wrong_examples = ctx.timeline.wrong_examples();
    for f in &mut run.faults {
        f.count_window(&run.timeline, cap);
    }
    result
}

/// The run proper: load, baseline probe, faults, the rest of the writing
/// time, final checks.
async fn drive(
    args: &Args,
    stack: &Stack,
    names: &Names,
    kinds: &[Kind],
    pipe: &mut Pipeline,
    ctx: &Ctx,
    run: &mut Run,
) -> anyhow::Result<()> {
    let mut prober = Prober {
        stack: stack.clone(),
        db: names.db.clone(),
        keys: names.keys()?,
        redis_url: pipe.redis_url(),
        user: args.users + 1,
        next_id: Arc::clone(&ctx.next_id),
        n: 0,
    };
    let load = start_load(args, stack, names, ctx);
    let cap = Duration::from_secs(args.recovery_cap_secs.max(1));
    let baseline = prober.probe(&ctx.api, Instant::now(), cap).await;
    run.baseline_secs = baseline
        .visible
        .zip(baseline.inserted)
        .map(|(v, i)| (v - i).as_secs_f64());
    let plan = faults::schedule(args.seed, args.seconds, kinds, args.min_gap_secs);
    eprintln!(
        "chaos: {} faults planned: {}",
        plan.len(),
        plan.iter()
            .map(|p| format!("{}@{:.0}s", p.kind.name(), p.at))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut earliest = Instant::now();
    for p in &plan {
        wait_until(earliest.max(ctx.timeline.t0() + Duration::from_secs_f64(p.at))).await?;
        let record = one_fault(p, pipe, &mut prober, ctx, cap).await;
        run.faults.push(record);
        // One fault at a time: the next starts at least a few seconds after
        // this one recovered (or gave up).
        earliest = Instant::now() + Duration::from_secs(5);
    }
    wait_until(ctx.timeline.t0() + Duration::from_secs(args.seconds)).await?;
    let written = ctx.timeline.now();
    run.writer = load.finish().await;
    run.achieved_rate = run.writer.rows as f64 / written.max(1.0);
    eprintln!(
        "chaos: writing stopped after {written:.0} s; {} rows committed; verifying",
        run.writer.rows
    );
    run.verified = Some(tokio::select! {
        v = verify_all(args, stack, names, pipe, ctx) => v?,
        () = until_interrupted() => bail!("interrupted"),
    });
    Ok(())
}

async fn one_fault(
    p: &faults::Planned,
    pipe: &mut Pipeline,
    prober: &mut Prober,
    ctx: &Ctx,
    cap: Duration,
) -> FaultRecord {
    let tl = &ctx.timeline;
    eprintln!(
        "chaos: t={:.0}s {} (held {:.1} s)",
        tl.now(),
        p.kind.name(),
        p.hold
    );
    let inj = faults::inject(p, pipe).await;
    let mut r = FaultRecord {
        kind: p.kind.name().into(),
        planned_at: p.at,
        start: tl.secs(inj.start),
        hold: p.hold,
        heal: inj.heal.map(|h| tl.secs(h)),
        skipped: inj.skipped.clone(),
        error: inj.error.clone(),
        ..FaultRecord::default()
    };
    if let Some(why) = &r.skipped {
        eprintln!("chaos:   skipped: {why}");
        return r;
    }
    let from = inj.heal.unwrap_or_else(Instant::now);
    let (url, keys) = (prober.redis_url.clone(), prober.keys.clone());
    let (probed, complete) = tokio::join!(
        prober.probe(&ctx.api, from, cap),
        probe::model_complete(&url, &keys, &ctx.topics, from, cap)
    );
    r.probe_id = Some(probed.id);
    r.model_complete_secs = complete.map(|c| c.saturating_duration_since(from).as_secs_f64());
    r.visible = probed.visible.map(|v| tl.secs(v));
    r.recovery_secs = probed
        .visible
        .map(|v| v.saturating_duration_since(from).as_secs_f64());
    r.not_recovered = inj.heal.is_none() || probed.visible.is_none();
    match (&r.error, r.recovery_secs) {
        (Some(e), _) => eprintln!("chaos:   heal failed: {e}"),
        (None, Some(s)) => eprintln!(
            "chaos:   healed after {:.1} s, recovered {s:.1} s later (model complete after {} s)",
            r.heal.unwrap_or(r.start) - r.start,
            r.model_complete_secs
                .map_or_else(|| "–".to_string(), |m| format!("{m:.1}"))
        ),
        (None, None) => eprintln!("chaos:   NOT recovered within {} s", cap.as_secs()),
    }
    r
}

async fn verify_all(
    args: &Args,
    stack: &Stack,
    names: &Names,
    pipe: &Pipeline,
    ctx: &Ctx,
) -> anyhow::Result<Verified> {
    let keys = names.keys()?;
    let url = pipe.redis_url();
    let settle = Duration::from_secs(args.settle_secs);
    let (report, converge_secs) = verify::converge(stack, &names.db, &url, &keys, settle).await;
    let mut v = Verified {
        converged: report.as_ref().is_some_and(checker::Report::is_equal),
        converge_secs,
        checker: report
            .map(|r| r.to_string())
            .unwrap_or_else(|| "never ran".into()),
        ..Verified::default()
    };
    eprintln!(
        "chaos: checker {} after {converge_secs:.1} s",
        if v.converged {
            "converged"
        } else {
            "did NOT converge"
        }
    );
    let mut my = admin(stack).await?;
    let rows = checker::mysql_purchases(&mut my, &names.db).await?;
    let packages = checker::mysql_packages(&mut my, &names.db).await?;
    v.mysql_purchases = rows.len();
    let by_id: std::collections::HashMap<u64, _> = rows.iter().map(|r| (r.id, r.clone())).collect();
    let mut ids: BTreeSet<u64> = by_id.keys().copied().collect();
    ids.extend(ctx.touched.purchases());
    let ids: Vec<u64> = ids.into_iter().collect();
    let stored = verify::redis_states(&url, &keys, &ids).await?;
    for id in &ids {
        let s = stored.get(id).copied().flatten();
        verify::classify(
            &mut v.redis,
            *id,
            by_id.get(id).map(|r| r.version),
            s,
            "Redis",
        );
    }
    verify::api_by_id(&ctx.api, &ids, &by_id, &mut v.api).await;
    v.api_ids = ids.len();
    let lists = verify::mysql_lists(&rows);
    for user in 1..=args.users + 1 {
        let want = lists.get(&user).map(Vec::as_slice).unwrap_or_default();
        match verify::api_list(&ctx.api, user).await {
            Ok(got) => verify::compare_list(&mut v.api, user, want, &got),
            Err(_) => v.api.errors += 1,
        }
        v.api_users += 1;
    }
    eprintln!("chaos: API checked; reading the change topics");
    let scratch = names.scratch(stack);
    let (s1, s2) = (stack.clone(), stack.clone());
    let (tp, tk) = (scratch.topic("purchases"), scratch.topic("packages"));
    let purchases = tokio::task::spawn_blocking(move || verify::read_topic(&s1, &tp)).await??;
    let pkg_events = tokio::task::spawn_blocking(move || verify::read_topic(&s2, &tk)).await??;
    let finals = by_id.iter().map(|(id, r)| (*id, r.version)).collect();
    v.purchases_chain = verify::check_chains(&purchases, &ctx.touched.moves(), &finals);
    let pkg_finals = packages.iter().map(|p| (p.id, p.version)).collect();
    v.packages_chain = verify::check_chains(&pkg_events, &[], &pkg_finals);
    Ok(v)
}
